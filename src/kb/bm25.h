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
