#include "pdsd/kb/text.h"

#include <cerrno>
#include <cstring>

#include <iconv.h>

namespace pdsd::kb {

namespace {
// Decode one code point at s[i]; returns length in bytes or 0 when invalid.
size_t decode_one(std::string_view s, size_t i, char32_t& cp) {
    auto b = static_cast<unsigned char>(s[i]);
    size_t n = s.size() - i;
    if (b < 0x80) { cp = b; return 1; }
    if (b >= 0xC2 && b <= 0xDF) {
        if (n < 2 || (static_cast<unsigned char>(s[i + 1]) & 0xC0) != 0x80) return 0;
        cp = (char32_t(b & 0x1F) << 6) | (s[i + 1] & 0x3F);
        return 2;
    }
    if (b >= 0xE0 && b <= 0xEF) {
        if (n < 3) return 0;
        auto b1 = static_cast<unsigned char>(s[i + 1]), b2 = static_cast<unsigned char>(s[i + 2]);
        if ((b1 & 0xC0) != 0x80 || (b2 & 0xC0) != 0x80) return 0;
        if (b == 0xE0 && b1 < 0xA0) return 0;   // overlong
        if (b == 0xED && b1 >= 0xA0) return 0;  // surrogates
        cp = (char32_t(b & 0x0F) << 12) | (char32_t(b1 & 0x3F) << 6) | (b2 & 0x3F);
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (n < 4) return 0;
        auto b1 = static_cast<unsigned char>(s[i + 1]), b2 = static_cast<unsigned char>(s[i + 2]),
             b3 = static_cast<unsigned char>(s[i + 3]);
        if ((b1 & 0xC0) != 0x80 || (b2 & 0xC0) != 0x80 || (b3 & 0xC0) != 0x80) return 0;
        if (b == 0xF0 && b1 < 0x90) return 0;
        if (b == 0xF4 && b1 >= 0x90) return 0;
        cp = (char32_t(b & 0x07) << 18) | (char32_t(b1 & 0x3F) << 12) | (char32_t(b2 & 0x3F) << 6) | (b3 & 0x3F);
        return 4;
    }
    return 0;
}

void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) out += static_cast<char>(c);
    else if (c < 0x800) { out += static_cast<char>(0xC0 | (c >> 6)); out += static_cast<char>(0x80 | (c & 0x3F)); }
    else if (c < 0x10000) {
        out += static_cast<char>(0xE0 | (c >> 12)); out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (c >> 18)); out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F)); out += static_cast<char>(0x80 | (c & 0x3F));
    }
}

// Whole-buffer GB18030 -> UTF-8; false when iconv rejects the bytes.
bool gb18030_to_utf8(std::string_view in, std::string& out) {
    iconv_t cd = iconv_open("UTF-8", "GB18030");
    if (cd == reinterpret_cast<iconv_t>(-1)) return false;
    out.assign(in.size() * 2 + 16, '\0');
    char* src = const_cast<char*>(in.data());
    size_t src_left = in.size();
    char* dst = out.data();
    size_t dst_left = out.size();
    bool ok = true;
    while (src_left > 0) {
        size_t r = iconv(cd, &src, &src_left, &dst, &dst_left);
        if (r == static_cast<size_t>(-1)) {
            if (errno == E2BIG) {
                size_t used = static_cast<size_t>(dst - out.data());
                out.resize(out.size() * 2);
                dst = out.data() + used;
                dst_left = out.size() - used;
                continue;
            }
            ok = false;
            break;
        }
    }
    iconv_close(cd);
    if (ok) out.resize(static_cast<size_t>(dst - out.data()));
    return ok;
}
}  // namespace

bool is_valid_utf8(std::string_view s) {
    char32_t cp;
    for (size_t i = 0; i < s.size();) {
        size_t n = decode_one(s, i, cp);
        if (!n) return false;
        i += n;
    }
    return true;
}

std::u32string utf8_to_u32(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    char32_t cp;
    for (size_t i = 0; i < s.size();) {
        size_t n = decode_one(s, i, cp);
        if (!n) { out += U'\uFFFD'; ++i; continue; }
        out += cp;
        i += n;
    }
    return out;
}

std::string u32_to_utf8(std::u32string_view s) {
    std::string out;
    out.reserve(s.size() * 3);
    for (char32_t c : s) append_utf8(out, c);
    return out;
}

size_t utf8_length(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

std::string decode_text(std::string_view bytes, std::string* encoding_out) {
    if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xEF &&
        static_cast<unsigned char>(bytes[1]) == 0xBB && static_cast<unsigned char>(bytes[2]) == 0xBF)
        bytes.remove_prefix(3);
    if (is_valid_utf8(bytes)) {
        if (encoding_out) *encoding_out = "utf-8";
        return std::string(bytes);
    }
    std::string out;
    if (gb18030_to_utf8(bytes, out)) {
        if (encoding_out) *encoding_out = "gb18030";
        return out;
    }
    if (encoding_out) *encoding_out = "utf-8 (lossy)";
    return u32_to_utf8(utf8_to_u32(bytes));
}

bool is_py_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2FA1F) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x3040 && c <= 0x30FF) || (c >= 0xAC00 && c <= 0xD7AF);
}

namespace {
bool is_word_char(char32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    // Latin-1 letters and other non-CJK letters: part of words. Punctuation blocks are not.
    if ((c >= 0xC0 && c <= 0x24F) || (c >= 0x370 && c <= 0x52F)) return c != 0xD7 && c != 0xF7;
    return false;
}
char32_t lower(char32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    return c;
}

template <typename F>
void for_each_run(std::string_view text, F&& on_run) {
    std::u32string u = utf8_to_u32(text);
    size_t i = 0;
    while (i < u.size()) {
        if (is_cjk(u[i])) {
            size_t j = i;
            while (j < u.size() && is_cjk(u[j])) ++j;
            on_run(std::u32string_view(u).substr(i, j - i), true);
            i = j;
        } else if (is_word_char(u[i])) {
            size_t j = i;
            std::u32string w;
            while (j < u.size() && is_word_char(u[j])) w += lower(u[j++]);
            on_run(std::u32string_view(w), false);
            i = j;
        } else {
            ++i;
        }
    }
}
}  // namespace

std::vector<std::string> bm25_terms(std::string_view text, bool for_query) {
    std::vector<std::string> out;
    for_each_run(text, [&](std::u32string_view run, bool cjk) {
        if (!cjk) { out.push_back(u32_to_utf8(run)); return; }
        if (!for_query || run.size() == 1)
            for (char32_t c : run) out.push_back(u32_to_utf8(std::u32string_view(&c, 1)));
        for (size_t k = 0; k + 1 < run.size(); ++k) out.push_back(u32_to_utf8(run.substr(k, 2)));
    });
    return out;
}

size_t count_terms(std::string_view text) {
    size_t n = 0;
    for_each_run(text, [&](std::u32string_view run, bool cjk) { n += cjk ? run.size() : 1; });
    return n;
}

}  // namespace pdsd::kb
