// Retrieval evaluation (`pdsd kb eval`): questions with known source files, run through
// KnowledgeBase::search, scored as hit@k and MRR.
//
// QA file: JSON Lines, one object per question:
//   {"question": "忘记管理员密码怎么办？", "source": "常见问题.txt"}
//   {"question": "...", "sources": ["a.md", "b.txt"]}       any of them counts
// ("query" is accepted for "question"). A source matches a hit when it equals the hit's
// file name (relative to content/) or its last path component.
//
// Definitions (per question, over the kept hits, best first, at most top_k chunks):
//   rank    = 1-based position of the first chunk whose file is a source; none if absent
//   hit@k   = fraction of questions with rank <= k
//   MRR     = mean of 1/rank (0 when absent), i.e. MRR@top_k
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <optional>
#include <string>
#include <vector>

namespace pdsd::kb {

struct EvalQuestion {
    std::string question;
    std::vector<std::string> sources;
    size_t line = 0;   // 1-based line in the QA file, for messages
};

// Throws IoError (unreadable) or DataError naming the line and field.
std::vector<EvalQuestion> load_qa_file(const std::string& path);

struct EvalResult {
    EvalQuestion q;
    std::optional<size_t> rank;            // see the header comment
    std::vector<std::string> retrieved;    // file#chunk of the kept hits, best first
};

struct EvalReport {
    std::vector<size_t> ks;                // the k of each hit_at entry, ascending
    std::vector<double> hit_at;            // hit@k for each ks[i]
    double mrr = 0;
    size_t top_k = 0;
    double ms_per_query = 0, p50_ms = 0, max_ms = 0;   // wall time of KnowledgeBase::search
    std::vector<EvalResult> results;
};

// Runs every question with `options` (top_k = the largest k). `ks` empty: 1, 3, 5, 10
// up to options.top_k, plus options.top_k itself.
EvalReport evaluate(const KnowledgeBase& kb, const std::vector<EvalQuestion>& questions, const SearchOptions& options,
                    std::vector<size_t> ks = {});

}  // namespace pdsd::kb
