#include "pdsd/rag/prompt.h"

#include <cstdio>

namespace pdsd::rag {

namespace {
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) s.replace(pos, from.size(), to);
    return s;
}

std::string fill(const std::string& tpl, const std::string& context, const std::string& question) {
    // Question last: a question containing "{{context}}" must stay literal.
    return replace_all(replace_all(tpl, "{{context}}", context), "{{question}}", question);
}
}  // namespace

std::string build_user_message(const std::string& question, const std::vector<kb::SearchHit>& hits,
                               const PromptTemplates& templates) {
    std::string context;
    int n = 0;
    for (const auto& h : hits) {
        if (!h.kept) continue;
        if (!context.empty()) context += "\n\n";
        context += "[" + std::to_string(++n) + "] " + h.text;
    }
    if (n == 0) return fill(templates.without_context, "", question);
    return fill(templates.with_context, context, question);
}

std::string format_sources(const std::vector<kb::SearchHit>& hits, bool with_text) {
    std::string out;
    int n = 0;
    char score[32];
    for (const auto& h : hits) {
        if (!h.kept) continue;
        std::snprintf(score, sizeof score, "%.4f", h.score);
        out += "出处 [" + std::to_string(++n) + "] " + h.file_name + " (chunk " + std::to_string(h.chunk_index) +
               ", score " + score + ")\n";
        if (with_text) out += "\n" + h.text + "\n\n";
    }
    if (n == 0) out = "未找到相关文档,该回答为大模型自身能力解答！\n";
    return out;
}

}  // namespace pdsd::rag
