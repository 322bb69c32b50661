// Text helpers for the knowledge base: UTF-8 <-> code points, encoding detection,
// and the tokenization used for BM25 (see docs/knowledge_base.md).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pdsd::kb {

// Decode bytes read from a file to UTF-8. Order: UTF-8 (a BOM is dropped), then
// GB18030 (a superset of GBK/GB2312) via iconv. Invalid bytes that neither decodes
// become U+FFFD. `encoding_out` (optional) receives "utf-8", "gb18030" or "utf-8 (lossy)".
std::string decode_text(std::string_view bytes, std::string* encoding_out = nullptr);

bool is_valid_utf8(std::string_view s);
std::u32string utf8_to_u32(std::string_view s);   // invalid bytes -> U+FFFD
std::string u32_to_utf8(std::u32string_view s);
size_t utf8_length(std::string_view s);            // code points, like Python len()

// Python's str.isspace() for one code point (what re's \s and str.strip() use).
bool is_py_space(char32_t c);
// CJK ideographs, kana, hangul: characters that BM25 indexes one by one.
bool is_cjk(char32_t c);

// BM25 terms of a text. CJK runs give each character and each adjacent pair
// ("安装" -> 安 装 安装); Latin/digit runs give one lowercased word. Punctuation and
// spaces separate terms. `for_query` = true gives the query form: CJK runs of length
// >= 2 give only their pairs (precise, short posting lists), a lone CJK char gives itself.
std::vector<std::string> bm25_terms(std::string_view text, bool for_query);
// Number of unigram terms (CJK chars + Latin words): the chunk's token_count.
size_t count_terms(std::string_view text);

}  // namespace pdsd::kb
