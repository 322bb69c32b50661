// UTF-8 repair, NFC with a quick check, and the character classes of the Qwen split.
#include "pdsd/tokenizer/unicode.h"

#include "pdsd/core/error.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

namespace pdsd::tokenizer {

namespace {

// Unicode White_Space (what Oniguruma's \s matches with Unicode strings).
bool is_white_space(char32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    switch (cp) {
        case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
            return true;
        default:
            return cp >= 0x2000 && cp <= 0x200A;
    }
}

uint8_t compute_class(char32_t cp) {
    uint8_t c = 0;
    if (is_white_space(cp)) c |= detail::kWS;
    if (cp == '\r' || cp == '\n') c |= detail::kCRLF;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
            c |= detail::kL;
            break;
        case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
            c |= detail::kN;
            break;
        default:
            break;
    }
    return c;
}

// Classes of the Basic Multilingual Plane, computed once (64 KiB).
struct BmpClasses {
    uint8_t cls[0x10000];
    BmpClasses() {
        for (char32_t cp = 0; cp < 0x10000; ++cp) cls[cp] = compute_class(cp);
    }
};
const BmpClasses& bmp_classes() {
    static const BmpClasses table;
    return table;
}

// NFC quick check: bit set when the code point is a starter (ccc 0) that NFC leaves
// alone (no canonical decomposition) and that never appears as a non-first part of a
// canonical decomposition (so it cannot compose with the character before it).
// Conservative: a clear bit only means "run the full normaliser".
struct NfcStable {
    std::vector<uint64_t> bits = std::vector<uint64_t>(0x110000 / 64, 0);
    NfcStable() {
        std::vector<uint64_t> second(0x110000 / 64, 0);
        auto set = [](std::vector<uint64_t>& v, char32_t cp) { v[cp >> 6] |= uint64_t(1) << (cp & 63); };
        auto get = [](const std::vector<uint64_t>& v, char32_t cp) { return (v[cp >> 6] >> (cp & 63)) & 1; };
        std::vector<bool> decomposes(0x110000, false);
        for (char32_t cp = 0; cp < 0x110000; ++cp) {
            const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
            if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0) continue;  // none or compat only
            decomposes[cp] = true;
            utf8proc_int32_t buf[32];
            int last = 0;
            utf8proc_ssize_t k = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buf, 32,
                                                         UTF8PROC_DECOMPOSE, &last);
            for (utf8proc_ssize_t m = 1; m < k && m < 32; ++m) set(second, static_cast<char32_t>(buf[m]));
        }
        // Hangul: vowel and trailing jamo compose with the preceding L / LV.
        for (char32_t cp = 0x1161; cp <= 0x1175; ++cp) set(second, cp);
        for (char32_t cp = 0x11A8; cp <= 0x11C2; ++cp) set(second, cp);
        for (char32_t cp = 0; cp < 0x110000; ++cp) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
            if (p->combining_class != 0 || decomposes[cp] || get(second, cp)) continue;
            set(bits, cp);
        }
    }
    bool stable(char32_t cp) const { return (bits[cp >> 6] >> (cp & 63)) & 1; }
};
const NfcStable& nfc_stable() {
    static const NfcStable table;
    return table;
}

// Length of the well-formed UTF-8 sequence at s[i..n), or 0 with `bad` set to the
// length of the maximal ill-formed subpart (>= 1) to replace by one U+FFFD.
size_t utf8_seq(const unsigned char* s, size_t i, size_t n, size_t& bad) {
    unsigned char b = s[i];
    if (b < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        bad = 1;
        return 0;
    }
    for (size_t k = 1; k < need; ++k) {
        if (i + k >= n) { bad = k; return 0; }
        unsigned char c = s[i + k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h) { bad = k; return 0; }
    }
    return need;
}

}  // namespace

namespace detail {
const uint8_t kAsciiClass[128] = {
#define C(cp) static_cast<uint8_t>(((cp) >= 'A' && (cp) <= 'Z') || ((cp) >= 'a' && (cp) <= 'z') ? kL : \
                                   ((cp) >= '0' && (cp) <= '9') ? kN : \
                                   ((cp) == '\r' || (cp) == '\n') ? (kWS | kCRLF) : \
                                   ((cp) == ' ' || ((cp) >= 9 && (cp) <= 13)) ? kWS : 0)
#define R8(b) C(b), C(b + 1), C(b + 2), C(b + 3), C(b + 4), C(b + 5), C(b + 6), C(b + 7)
    R8(0), R8(8), R8(16), R8(24), R8(32), R8(40), R8(48), R8(56),
    R8(64), R8(72), R8(80), R8(88), R8(96), R8(104), R8(112), R8(120)
#undef R8
#undef C
};

uint8_t cp_class(char32_t cp) {
    if (cp < 0x10000) return bmp_classes().cls[cp];
    return compute_class(cp);
}
}  // namespace detail

bool is_valid_utf8(std::string_view bytes) {
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    size_t n = bytes.size(), i = 0;
    while (i < n) {
        // ASCII fast path, 8 bytes at a time.
        while (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        size_t bad = 0, k = utf8_seq(s, i, n, bad);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

std::string utf8_replace_invalid(std::string_view bytes) {
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    size_t n = bytes.size(), i = 0;
    std::string out;
    out.reserve(n + 8);
    while (i < n) {
        size_t bad = 0, k = utf8_seq(s, i, n, bad);
        if (k > 0) {
            out.append(bytes.data() + i, k);
            i += k;
        } else {
            out += "\xEF\xBF\xBD";
            i += bad;
        }
    }
    return out;
}

bool is_nfc_quick(std::string_view text) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    size_t n = text.size(), i = 0;
    const NfcStable* table = nullptr;
    while (i < n) {
        if (s[i] < 0x80) { ++i; continue; }
        if (!table) table = &nfc_stable();
        char32_t cp;
        i += detail::decode_cp(s + i, cp);
        if (!table->stable(cp)) return false;
    }
    return true;
}

std::string nfc(std::string_view text) {
    if (is_nfc_quick(text)) return std::string(text);
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t r = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                      static_cast<utf8proc_ssize_t>(text.size()), &out,
                                      static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (r < 0) {
        throw DataError(ErrorInfo{}.msg("NFC normalisation failed").found(utf8proc_errmsg(r))
                            .hint("the text must be valid UTF-8"));
    }
    std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> guard(out, &std::free);
    return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(r));
}

std::vector<std::string> qwen_pre_tokenize(std::string_view text) {
    std::vector<std::string> pieces;
    qwen_split(text, [&](size_t off, size_t len) { pieces.emplace_back(text.substr(off, len)); });
    return pieces;
}

size_t complete_utf8_prefix(std::string_view bytes) {
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    size_t n = bytes.size();
    // Find the start of the last character: at most 3 continuation bytes back.
    size_t back = 0;
    while (back < 3 && back < n && (s[n - 1 - back] & 0xC0) == 0x80) ++back;
    if (back == n) return n;  // only continuation bytes: nothing a later byte could complete
    size_t start = n - 1 - back;
    size_t bad = 0, k = utf8_seq(s, start, n, bad);
    if (k > 0) return n;                       // the last character is complete
    if (start + bad == n && s[start] >= 0xC2 && s[start] <= 0xF4) return start;  // a valid but unfinished sequence
    return n;                                  // ill-formed: more bytes cannot fix it
}

}  // namespace pdsd::tokenizer
