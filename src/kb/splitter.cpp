// ChineseRecursiveTextSplitter, ported over code-point spans of one u32string so
// every chunk also knows where it came from (start/end offsets).
#include "pdsd/kb/splitter.h"

#include "pdsd/core/error.h"
#include "pdsd/kb/text.h"

#include <string>

namespace pdsd::kb {

namespace {

struct Alt {
    std::u32string lit;
    bool trailing_space;   // the regex alternative ends with \s
};
using Separator = std::vector<Alt>;

// Chatchat's default separators, in order ("\n\n", "\n", "。|！|？", "\.\s|\!\s|\?\s",
// "；|;\s", "，|,\s"); the alternatives of a regex are tried in order at each position.
const std::vector<Separator>& default_separators() {
    static const std::vector<Separator> seps = {
        {{U"\n\n", false}},
        {{U"\n", false}},
        {{U"。", false}, {U"！", false}, {U"？", false}},
        {{U".", true}, {U"!", true}, {U"?", true}},
        {{U"；", false}, {U";", true}},
        {{U"，", false}, {U",", true}},
    };
    return seps;
}

struct Span { size_t b, e; size_t len() const { return e - b; } };

class Splitter {
public:
    Splitter(const std::u32string& t, size_t size, size_t overlap) : t_(t), size_(size), overlap_(overlap) {}

    std::vector<Span> split(Span text, size_t first_sep) const {
        const auto& seps = default_separators();
        // Choose the first separator occurring in the text; with none, the last one is
        // used (it does not match, so the text stays one piece) and nothing remains.
        size_t chosen = seps.size() - 1;
        size_t next = seps.size();
        for (size_t i = first_sep; i < seps.size(); ++i) {
            if (occurs(text, seps[i])) { chosen = i; next = i + 1; break; }
        }
        std::vector<Span> pieces = split_keep_end(text, seps[chosen]);
        std::vector<Span> out, good;
        for (const Span& s : pieces) {
            if (s.len() < size_) {
                good.push_back(s);
                continue;
            }
            if (!good.empty()) { merge(good, out); good.clear(); }
            if (next >= seps.size()) {
                out.push_back(s);
            } else {
                auto sub = split(s, next);
                out.insert(out.end(), sub.begin(), sub.end());
            }
        }
        if (!good.empty()) merge(good, out);
        // Post-process: strip, drop empty (the \n collapse happens on the final text).
        std::vector<Span> res;
        for (Span s : out) {
            s = strip(s);
            if (s.len()) res.push_back(s);
        }
        return res;
    }

private:
    size_t match_at(size_t pos, size_t end, const Separator& sep) const {
        for (const Alt& a : sep) {
            size_t n = a.lit.size();
            if (pos + n + (a.trailing_space ? 1 : 0) > end) continue;
            if (t_.compare(pos, n, a.lit) != 0) continue;
            if (a.trailing_space) {
                if (!is_py_space(t_[pos + n])) continue;
                return n + 1;
            }
            return n;
        }
        return 0;
    }
    bool occurs(Span s, const Separator& sep) const {
        for (size_t p = s.b; p < s.e; ++p)
            if (match_at(p, s.e, sep)) return true;
        return false;
    }
    // re.split("(sep)") and zip the pieces with their separators: each separator ends
    // the piece before it. Empty pieces are dropped.
    std::vector<Span> split_keep_end(Span s, const Separator& sep) const {
        std::vector<Span> out;
        size_t prev = s.b, p = s.b;
        while (p < s.e) {
            size_t n = match_at(p, s.e, sep);
            if (n) {
                out.push_back({prev, p + n});
                p += n;
                prev = p;
            } else {
                ++p;
            }
        }
        if (prev < s.e) out.push_back({prev, s.e});
        return out;
    }
    Span strip(Span s) const {
        while (s.b < s.e && is_py_space(t_[s.b])) ++s.b;
        while (s.e > s.b && is_py_space(t_[s.e - 1])) --s.e;
        return s;
    }
    // langchain TextSplitter._merge_splits with separator "" (length 0). The pieces
    // are consecutive in the text, so a joined doc is the span first.b..last.e.
    void merge(const std::vector<Span>& splits, std::vector<Span>& docs) const {
        size_t front = 0, total = 0;
        auto emit = [&](size_t from, size_t to) {   // join splits[from..to)
            Span j = strip({splits[from].b, splits[to - 1].e});
            if (j.len()) docs.push_back(j);
        };
        size_t end = 0;  // current doc = splits[front, end)
        for (size_t i = 0; i < splits.size(); ++i) {
            size_t len = splits[i].len();
            if (total + len > size_) {
                if (end > front) {
                    emit(front, end);
                    while (total > overlap_ || (total + len > size_ && total > 0)) {
                        total -= splits[front].len();
                        ++front;
                    }
                }
            }
            end = i + 1;
            total += len;
        }
        if (end > front) emit(front, end);
    }

    const std::u32string& t_;
    size_t size_, overlap_;
};

std::string collapse_newlines(const std::u32string& t, size_t b, size_t e) {
    std::u32string out;
    out.reserve(e - b);
    for (size_t i = b; i < e; ++i) {
        if (t[i] == U'\n' && i + 1 < e && t[i + 1] == U'\n') {
            out += U'\n';
            while (i + 1 < e && t[i + 1] == U'\n') ++i;
            continue;
        }
        out += t[i];
    }
    return u32_to_utf8(out);
}

}  // namespace

std::vector<TextChunk> split_text(const std::string& text, const SplitterOptions& options) {
    if (options.chunk_size == 0)
        throw UsageError(ErrorInfo{}.at("chunk_size").expected("a positive number of characters").found("0"));
    if (options.chunk_overlap > options.chunk_size)
        throw UsageError(ErrorInfo{}.at("chunk_overlap")
                             .msg("chunk_overlap is larger than chunk_size")
                             .expected("chunk_overlap <= chunk_size (" + std::to_string(options.chunk_size) + ")")
                             .found(std::to_string(options.chunk_overlap)));
    std::u32string t = utf8_to_u32(text);
    Splitter sp(t, options.chunk_size, options.chunk_overlap);
    std::vector<TextChunk> out;
    for (auto s : sp.split({0, t.size()}, 0)) out.push_back({collapse_newlines(t, s.b, s.e), s.b, s.e});
    return out;
}

}  // namespace pdsd::kb
