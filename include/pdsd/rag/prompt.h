// RAG prompt assembly with Langchain-Chatchat's templates (anchors.md section 3).
//
// Chatchat joins the retrieved chunks with blank lines and fills the rag template prompt_name
// names ("default"); with no chunk it uses "empty". pdsd numbers the chunks ("[1] ...") so the
// answer can cite them, and lists the sources as Chatchat's 出处 entries (format_reference).
// The templates come from <root>/prompt_settings.yaml (prompt_settings.h).
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::rag {

// The jinja2 variables of `tpl` ("{{ name }}", spaces allowed), in order of appearance.
std::vector<std::string> template_variables(const std::string& tpl);
// `tpl` with every {{ name }} found in `vars` replaced, in one pass (a value holding
// "{{context}}" stays literal); other text, unknown variables included, is kept as is.
std::string render_template(const std::string& tpl, const std::map<std::string, std::string>& vars);

// The pair one RAG turn fills (prompt_settings.h picks them from prompt_settings.yaml).
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

// One RAG turn's retrieval, the same for `pdsd chat` and the server's kb_chat and file_chat:
// search `kb`, keep the hits that pass the score threshold (rank order), fill the template.
struct RagTurn {
    std::vector<kb::SearchHit> sources;   // kept hits, in prompt order ([1], [2], ...)
    std::string user_message;             // build_user_message(question, sources, templates)
};
RagTurn retrieve(const kb::KnowledgeBase& kb, const std::string& question, const kb::SearchOptions& search,
                 const PromptTemplates& templates = {});

// Where a 出处 entry links: {api_base}/knowledge_base/download_doc?knowledge_base_name=..&file_name=..
// (the query urlencoded as Python's urllib.parse.urlencode does).
struct ReferenceLink {
    std::string api_base;                 // e.g. "http://127.0.0.1:7861"; " " and "/" at its ends are dropped
    std::string kb_name;
};

// Chatchat's 出处 entries, one per kept hit, numbered from 1:
//   with a link (kb_chat's format_reference): "出处 [i] [file](url) \n\n<chunk>\n\n"
//   without (file_chat's, and the terminal):   "出处 [i] [file] \n\n<chunk>\n\n"
// Without the text only the head is kept: "出处 [i] [file](url)" or "出处 [i] [file]".
std::vector<std::string> format_reference(const std::vector<kb::SearchHit>& hits, const std::optional<ReferenceLink>& link,
                                          bool with_text);

// Chatchat's line for an answer with no source (the server wraps it in a red <span>).
inline constexpr const char* kNoReference = "未找到相关文档,该回答为大模型自身能力解答！";

// The terminal's sources: the link-less entries of format_reference one after another (a head
// per line without the text), or kNoReference and a newline when no hit was kept.
std::string reference_text(const std::vector<kb::SearchHit>& hits, bool with_text);

}  // namespace pdsd::rag
