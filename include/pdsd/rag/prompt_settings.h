// Prompt templates from <root>/prompt_settings.yaml, Chatchat 0.3's PromptSettings file.
//
//   llm_model:            # plain LLM chat; {{input}}, {{history}}
//     default: "{{input}}"
//     with_history: ...
//   rag:                  # kb_chat, file chat, pdsd chat --kb; {{context}}, {{question}}
//     default: ...        # the template a request's prompt_name picks (default: "default")
//     empty: ...          # used instead whenever no chunk was kept (Chatchat's kb_chat rule)
//
// A section in the file replaces the built-in one (pydantic settings, as Chatchat reads it);
// sections it leaves out keep the built-in defaults; a missing file = the defaults. Other
// sections (Chatchat's preprocess_model, action_model, ...) are kept and served by
// /server/get_prompt_template, though pdsd has no agent that fills them. Only jinja2
// variables are filled ({{ name }}, spaces allowed); {% statements %} are refused at load.
//
// `pdsd init` writes the defaults (default_prompt_settings_yaml); pdsd serve re-reads the
// file when it changes (PromptSettingsCache); `pdsd chat --kb` reads it once.
#pragma once

#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt.h"

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::rag {

struct PromptSettings {
    std::string source;   // the file read; "" = the built-in defaults
    // type (section) -> (name, template) in file order.
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> sections;

    // The template, or nullptr when the type or name is unknown.
    const std::string* find(const std::string& type, const std::string& name) const;
    std::vector<std::string> names(const std::string& type) const;   // file order; empty for an unknown type
    // The template, or UsageError naming `field`, the known names and the file.
    const std::string& require(const std::string& type, const std::string& name, const std::string& field) const;
    // kb_chat's pair: rag/<prompt_name> with chunks, rag/empty without (UsageError as require).
    PromptTemplates rag(const std::string& prompt_name, const std::string& field = "prompt_name") const;
    std::string where() const;   // source, or "the built-in defaults (no <root>/prompt_settings.yaml)"
};

// Chatchat 0.3's llm_model and rag sections.
PromptSettings default_prompt_settings();

// <root>/prompt_settings.yaml over the defaults (see the header comment); ConfigError naming
// the file and line for bad YAML, a section that is not a mapping, a template that is not
// text, a missing rag/default, rag/empty or llm_model/default, or a variable pdsd does not fill.
PromptSettings load_prompt_settings(const std::string& root);

// The commented file `pdsd init` writes: the defaults as YAML block scalars (loading it gives
// default_prompt_settings()).
std::string default_prompt_settings_yaml();

// <root>/prompt_settings.yaml, re-read only when its FileStamp changed (pdsd serve). Thread-safe.
class PromptSettingsCache {
public:
    explicit PromptSettingsCache(std::string root) : root_(std::move(root)) {}
    PromptSettings get();   // throws as load_prompt_settings (nothing cached then)

private:
    std::string root_;
    std::mutex mu_;
    bool loaded_ = false;
    kb::FileStamp stamp_;
    PromptSettings value_;
};

}  // namespace pdsd::rag
