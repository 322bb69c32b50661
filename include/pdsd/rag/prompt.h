// RAG prompt assembly with Langchain-Chatchat's templates (anchors.md section 3).
//
// Chatchat joins the retrieved chunks with blank lines and fills its "default" template;
// with no chunk it uses "empty". pdsd numbers the chunks ("[1] ...") so the answer can cite
// them, and prints the sources after the answer as Chatchat's 出处 lines.
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <string>
#include <vector>

namespace pdsd::rag {

struct PromptTemplates {
    // {{context}} and {{question}} are replaced. Defaults: Chatchat 0.3's rag "default"/"empty".
    std::string with_context =
        "【指令】根据已知信息，简洁和专业的来回答问题。如果无法从中得到答案，请说 “根据已知信息无法回答该问题”，"
        "不允许在答案中添加编造成分，答案请使用中文。\n\n【已知信息】{{context}}\n\n【问题】{{question}}\n";
    std::string without_context = "请你回答我的问题:\n{{question}}";
};

// The user message for `question` given retrieved `hits` (kept ones only).
std::string build_user_message(const std::string& question, const std::vector<kb::SearchHit>& hits,
                               const PromptTemplates& templates = {});

// "出处 [i] file (chunk N, score S)\n\n<chunk text>\n" lines, Chatchat's reference format
// without the download link; or Chatchat's "no relevant documents" line when empty.
std::string format_sources(const std::vector<kb::SearchHit>& hits, bool with_text);

}  // namespace pdsd::rag
