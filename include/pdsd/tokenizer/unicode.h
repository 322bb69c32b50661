// Unicode building blocks of the Qwen tokenizer, exposed for tests and for other stages
// that need the same text handling (UTF-8 repair, NFC, the Qwen pre-tokenizer split).
//
// Torch-free. Character properties come from utf8proc (Unicode 15 in Debian 12's 2.8).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pdsd::tokenizer {

// True when `bytes` is well-formed UTF-8 (no surrogates, no overlongs, <= U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

// `bytes` with every maximal ill-formed subsequence replaced by U+FFFD ("substitution of
// maximal subparts", Unicode ch. 3) — byte for byte what Python's
// `bytes.decode("utf-8", errors="replace")` and Rust's `String::from_utf8_lossy` produce.
std::string utf8_replace_invalid(std::string_view bytes);

// Unicode NFC of valid UTF-8 `text`. Text made only of characters that NFC never
// changes (quick check) is returned unchanged without calling utf8proc.
std::string nfc(std::string_view text);
// True when nfc(text) == text is known without normalising (all characters are stable
// starters that cannot compose with a neighbour).
bool is_nfc_quick(std::string_view text);

// The Qwen2 pre-tokenizer split (tokenizer.json `Split` with behavior Isolated):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// hand-written over code points with Oniguruma's semantics (what HF tokenizers runs):
// leftmost-first alternation, greedy repeats with backtracking, \s = Unicode White_Space,
// \p{L} = general category L*, \p{N} = N*, (?i:) also matching U+017F for 's'.
// `text` must be valid UTF-8. Calls `piece(offset, length)` in bytes, in order; the
// pieces cover `text` exactly.
template <typename F>
void qwen_split(std::string_view text, F&& piece);
// Convenience for tests: the pieces as strings.
std::vector<std::string> qwen_pre_tokenize(std::string_view text);

// ---- implementation details used by the template ----------------------------------
namespace detail {
enum : uint8_t { kL = 1, kN = 2, kWS = 4, kCRLF = 8 };
// Class bits of code point `cp` (kL, kN, kWS, kCRLF: \r or \n).
uint8_t cp_class(char32_t cp);
// Decode one code point of valid UTF-8 at p[0..n): returns its byte length.
inline size_t decode_cp(const unsigned char* p, char32_t& cp) {
    unsigned char b = p[0];
    if (b < 0x80) { cp = b; return 1; }
    if (b < 0xE0) { cp = (char32_t(b & 0x1F) << 6) | (p[1] & 0x3F); return 2; }
    if (b < 0xF0) { cp = (char32_t(b & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F); return 3; }
    cp = (char32_t(b & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    return 4;
}
extern const uint8_t kAsciiClass[128];
inline uint8_t class_at(const unsigned char* p, size_t& len, char32_t& cp) {
    if (p[0] < 0x80) { cp = p[0]; len = 1; return kAsciiClass[p[0]]; }
    len = decode_cp(p, cp);
    return cp_class(cp);
}
}  // namespace detail

template <typename F>
void qwen_split(std::string_view text, F&& piece) {
    using namespace detail;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    auto is_other = [](uint8_t c) { return (c & (kL | kN | kWS)) == 0; };
    size_t i = 0;
    while (i < n) {
        size_t len;
        char32_t cp;
        uint8_t c = class_at(s + i, len, cp);
        size_t j = i + len;
        // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if (cp == '\'' && j < n) {
            // Bytes whose |0x20 is an ASCII lowercase letter are exactly that letter's two cases.
            unsigned char a = s[j] | 0x20;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                piece(i, 2);
                i += 2;
                continue;
            }
            if (s[j] == 0xC5 && j + 1 < n && s[j + 1] == 0xBF) {  // U+017F LONG S folds to 's'
                piece(i, 3);
                i += 3;
                continue;
            }
            if (j + 1 < n) {
                unsigned char b = s[j + 1] | 0x20;
                if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                    piece(i, 3);
                    i += 3;
                    continue;
                }
            }
        }
        // 2. [^\r\n\p{L}\p{N}]?\p{L}+
        {
            size_t k = i;
            if (!(c & (kL | kN | kCRLF)) && j < n) {
                size_t l2;
                char32_t c2;
                if (class_at(s + j, l2, c2) & kL) k = j;  // the optional prefix char is taken
            }
            if (k != i || (c & kL)) {
                size_t e = k;
                while (e < n) {
                    size_t l2;
                    char32_t c2;
                    if (!(class_at(s + e, l2, c2) & kL)) break;
                    e += l2;
                }
                piece(i, e - i);
                i = e;
                continue;
            }
        }
        // 3. \p{N}
        if (c & kN) {
            piece(i, len);
            i = j;
            continue;
        }
        // 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        {
            size_t k = i;
            bool ok = is_other(c);
            if (cp == ' ' && j < n) {
                size_t l2;
                char32_t c2;
                if (is_other(class_at(s + j, l2, c2))) { k = j; ok = true; }
            }
            if (ok) {
                size_t e = k;
                while (e < n) {
                    size_t l2;
                    char32_t c2;
                    if (!is_other(class_at(s + e, l2, c2))) break;
                    e += l2;
                }
                while (e < n && (s[e] == '\r' || s[e] == '\n')) ++e;
                piece(i, e - i);
                i = e;
                continue;
            }
        }
        // c is whitespace here. Find the whitespace run [i, e), the end of its last
        // \r/\n character, and the start of its last character.
        size_t e = i, last_crlf_end = 0, last_start = i;
        bool has_crlf = false;
        while (e < n) {
            size_t l2;
            char32_t c2;
            uint8_t k2 = class_at(s + e, l2, c2);
            if (!(k2 & kWS)) break;
            if (k2 & kCRLF) { has_crlf = true; last_crlf_end = e + l2; }
            last_start = e;
            e += l2;
        }
        // 5. \s*[\r\n]+ : greedy \s* backs off to the last \r/\n of the run.
        if (has_crlf) {
            piece(i, last_crlf_end - i);
            i = last_crlf_end;
            continue;
        }
        // 6. \s+(?!\S) : the whole run at the end of text, else all but its last char.
        if (e == n) {
            piece(i, e - i);
            i = e;
            continue;
        }
        if (last_start > i) {
            piece(i, last_start - i);
            i = last_start;
            continue;
        }
        // 7. \s+ : a single whitespace char before a non-space.
        piece(i, e - i);
        i = e;
    }
}

}  // namespace pdsd::tokenizer
