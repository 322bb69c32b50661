// BM25 as both knowledge-base stores compute it (private to kb/): the query's terms, which
// of them a search keeps, and SQLite FTS5's bm25() formula (fts5_aux.c), so the local store's
// "postings" scorer and the PostgreSQL store (pg_store.cpp) give FTS5's scores.
#pragma once

#include "pdsd/kb/text.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::kb::detail {

// KBs with at least this many chunks prune common query terms (keep_query_terms).
constexpr int64_t kPruneMinChunks = 20000;

// FTS5's constants: k1 1.2, b 0.75.
constexpr double kBm25K1 = 1.2, kBm25B = 0.75;

// The query's terms (bm25_terms in query form), first occurrence kept, in query order.
inline std::vector<std::string> distinct_query_terms(const std::string& query) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (auto& t : bm25_terms(query, true))
        if (seen.insert(t).second) out.push_back(t);
    return out;
}

// A chunk's terms as the local store indexes them: bm25_terms, space-separated (what its
// FTS5 table holds; unicode61 then splits it back into the same tokens).
inline std::string indexed_terms(const std::string& text) {
    std::string out;
    for (auto& t : bm25_terms(text, false)) {
        if (!out.empty()) out += ' ';
        out += t;
    }
    return out;
}

// What FTS5's unicode61 tokenizer (remove_diacritics 0) makes of a chunk's indexed_terms:
// its tokens, hence the lengths and term frequencies of the local store's FTS5 table. That
// is pdsd's terms split where unicode61 separates but pdsd's term rule does not ('_', a few
// Greek/Cyrillic signs and marks, kana sound marks and the middle dot; text.cpp's
// for_each_run), Greek and Cyrillic capitals folded (pdsd lowercases ASCII and Latin-1 only).
// Not emulated: folding of Latin Extended-A/B capitals (e.g. Ā): a chunk with both cases of
// such a letter counts two terms here and one in FTS5.
inline bool unicode61_separates(char32_t c) {
    return c == '_' || c == 0x375 || c == 0x37E || c == 0x384 || c == 0x385 || c == 0x387 || c == 0x3F6 ||
           (c >= 0x378 && c <= 0x379) || (c >= 0x380 && c <= 0x383) || c == 0x38B || c == 0x38D || c == 0x3A2 ||
           (c >= 0x482 && c <= 0x489) || c == 0x3040 || (c >= 0x3097 && c <= 0x309C) || c == 0x30A0 || c == 0x30FB;
}
inline char32_t unicode61_fold(char32_t c) {
    if ((c >= 0x391 && c <= 0x3A9) || (c >= 0x410 && c <= 0x42F)) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}
inline std::vector<std::string> fts5_tokens(const std::string& text) {
    std::vector<std::string> out;
    for (auto& term : bm25_terms(text, false)) {
        std::u32string tok;
        for (char32_t c : utf8_to_u32(term)) {
            if (!unicode61_separates(c)) { tok += unicode61_fold(c); continue; }
            if (!tok.empty()) out.push_back(u32_to_utf8(tok));
            tok.clear();
        }
        if (!tok.empty()) out.push_back(u32_to_utf8(tok));
    }
    return out;
}

// FTS5's idf of a term in `df` of `n_rows` chunks: ln((N - df + 0.5) / (df + 0.5)), at least 1e-6.
inline double fts5_idf(int64_t n_rows, int64_t df) {
    double idf = std::log((static_cast<double>(n_rows) - static_cast<double>(df) + 0.5) / (static_cast<double>(df) + 0.5));
    return idf <= 0.0 ? 1e-6 : idf;
}

// One term's share of a chunk's score: `tf` occurrences in a chunk of `doc_len` terms,
// `avg_len` = mean terms per chunk. A chunk's -bm25() is the sum over the query's terms.
inline double fts5_term_score(double idf, double tf, double doc_len, double avg_len) {
    return idf * ((tf * (kBm25K1 + 1.0)) / (tf + kBm25K1 * (1 - kBm25B + kBm25B * doc_len / avg_len)));
}

// The (df, term) pairs a search scores, rarest first: terms found in no chunk dropped; in KBs
// of >= kPruneMinChunks chunks also those in more than prune_df_ratio of the chunks while a
// rarer one remains (their idf is small and their posting lists are the slow part).
inline std::vector<std::pair<int64_t, std::string>> keep_query_terms(std::vector<std::pair<int64_t, std::string>> df,
                                                                      int64_t n_chunks, double prune_df_ratio) {
    std::sort(df.begin(), df.end());
    const bool large = n_chunks >= kPruneMinChunks;
    const int64_t limit = large ? static_cast<int64_t>(prune_df_ratio * static_cast<double>(n_chunks))
                                : std::numeric_limits<int64_t>::max();
    std::vector<std::pair<int64_t, std::string>> kept;
    for (auto& e : df)
        if (e.first > 0 && (e.first <= limit || kept.empty())) kept.push_back(e);
    return kept;
}

}  // namespace pdsd::kb::detail
