// Port of Langchain-Chatchat's ChineseRecursiveTextSplitter (0.3.1.3), measured in
// Unicode code points like Python's len(). Semantics (kept exactly; the oracle test
// scripts/oracle/splitter_diff.py compares against the Python implementation):
//   - separators, as regexes, in order: "\n\n", "\n", "。|！|？", "\.\s|\!\s|\?\s",
//     "；|;\s", "，|,\s"; the first that occurs in the text is used, and the separator
//     stays at the END of the preceding piece; empty pieces are dropped;
//   - pieces shorter than chunk_size are merged with langchain's _merge_splits
//     (separator ""): whole pieces totalling <= chunk_overlap carry over between chunks;
//   - a piece >= chunk_size is split recursively with the remaining separators, or
//     emitted oversize when none remain;
//   - every chunk is strip()ped, "\n{2,}" becomes "\n", empty chunks are dropped.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace pdsd::kb {

struct SplitterOptions {
    size_t chunk_size = 750;     // code points
    size_t chunk_overlap = 150;  // code points; > chunk_size throws UsageError
};

struct TextChunk {
    std::string text;   // UTF-8, post-processed (stripped, blank lines collapsed)
    size_t start = 0;   // code-point offsets of the chunk's span in the input text;
    size_t end = 0;     // text is that span with "\n{2,}" collapsed to "\n"
};

std::vector<TextChunk> split_text(const std::string& text, const SplitterOptions& options = {});

}  // namespace pdsd::kb
