#include "pdsd/kb/eval.h"

#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>

namespace pdsd::kb {

namespace {
bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }
}  // namespace

std::vector<EvalQuestion> load_qa_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(ErrorInfo{path}.msg("cannot read the QA file").hint("pdsd kb eval -n KB --qa FILE.jsonl"));
    std::vector<EvalQuestion> out;
    std::string line;
    size_t lineno = 0;
    const std::string example = R"({"question": "...", "source": "file.txt"})";
    while (std::getline(in, line)) {
        ++lineno;
        if (blank(line)) continue;
        auto at = ErrorInfo{path}.at("line " + std::to_string(lineno));
        nlohmann::json j;
        try {
            j = parse_json_bounded(line, path + ":" + std::to_string(lineno));   // depth and size budget
        } catch (const FormatError& e) {
            throw DataError(at.msg("invalid JSON").found(e.what()).hint("one JSON object per line: " + example));
        }
        if (!j.is_object()) throw DataError(at.msg("not a JSON object").expected(example).found(j.type_name()));
        EvalQuestion q;
        q.line = lineno;
        const char* qkey = j.contains("question") ? "question" : "query";
        if (!j.contains(qkey) || !j[qkey].is_string() || blank(j[qkey].get<std::string>()))
            throw DataError(at.at("line " + std::to_string(lineno) + ", field \"question\"").msg("missing or empty question")
                                .expected("a non-empty string").hint(example));
        q.question = j[qkey].get<std::string>();
        auto bad_sources = [&](const std::string& found) {
            return DataError(at.at("line " + std::to_string(lineno) + ", field \"source\"/\"sources\"")
                                 .msg("no source file given").expected("\"source\": \"file\" or \"sources\": [\"file\", ...]")
                                 .found(found).hint(example));
        };
        if (j.contains("sources")) {
            if (!j["sources"].is_array()) throw bad_sources(j["sources"].type_name());
            for (auto& s : j["sources"]) {
                if (!s.is_string()) throw bad_sources(std::string("an array holding a ") + s.type_name());
                q.sources.push_back(s.get<std::string>());
            }
        } else if (j.contains("source")) {
            if (!j["source"].is_string()) throw bad_sources(j["source"].type_name());
            q.sources.push_back(j["source"].get<std::string>());
        }
        if (q.sources.empty()) throw bad_sources("none");
        out.push_back(std::move(q));
    }
    if (out.empty()) throw DataError(ErrorInfo{path}.msg("no questions in the QA file").expected(example));
    return out;
}

namespace {
bool matches(const std::string& file_name, const std::vector<std::string>& sources) {
    auto slash = file_name.find_last_of('/');
    std::string base = slash == std::string::npos ? file_name : file_name.substr(slash + 1);
    for (auto& s : sources)
        if (s == file_name || s == base) return true;
    return false;
}
}  // namespace

EvalReport evaluate(const KnowledgeBase& kb, const std::vector<EvalQuestion>& questions, const SearchOptions& options,
                    std::vector<size_t> ks) {
    if (options.top_k == 0) throw UsageError(ErrorInfo{}.at("--top_k").msg("top_k must be at least 1"));
    EvalReport rep;
    rep.top_k = options.top_k;
    if (ks.empty()) {
        for (size_t k : {1, 3, 5, 10})
            if (k < options.top_k) ks.push_back(k);
        ks.push_back(options.top_k);
    }
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    rep.ks = ks;
    rep.hit_at.assign(ks.size(), 0.0);
    SearchOptions opt = options;
    opt.explain = false;
    std::vector<double> ms;
    for (auto& q : questions) {
        EvalResult r{q, std::nullopt, {}};
        auto t0 = std::chrono::steady_clock::now();
        auto hits = kb.search(q.question, opt);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        for (size_t i = 0; i < hits.size() && i < opt.top_k; ++i) {
            r.retrieved.push_back(hits[i].file_name + "#" + std::to_string(hits[i].chunk_index));
            if (!r.rank && matches(hits[i].file_name, q.sources)) r.rank = i + 1;
        }
        if (r.rank) {
            rep.mrr += 1.0 / static_cast<double>(*r.rank);
            for (size_t i = 0; i < ks.size(); ++i)
                if (*r.rank <= ks[i]) rep.hit_at[i] += 1;
        }
        rep.results.push_back(std::move(r));
    }
    double n = static_cast<double>(questions.size());
    if (n > 0) {
        rep.mrr /= n;
        for (auto& h : rep.hit_at) h /= n;
        for (double m : ms) rep.ms_per_query += m / n;
        std::sort(ms.begin(), ms.end());
        rep.p50_ms = ms[ms.size() / 2];
        rep.max_ms = ms.back();
    }
    return rep;
}

}  // namespace pdsd::kb
