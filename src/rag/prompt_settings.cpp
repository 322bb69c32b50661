// rag::PromptSettings (prompt_settings.h): Chatchat's prompt_settings.yaml, its defaults and
// the file pdsd init writes.
#include "pdsd/rag/prompt_settings.h"

#include "pdsd/core/error.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

namespace pdsd::rag {

namespace fs = std::filesystem;

namespace {

// Chatchat 0.3's llm_model templates (settings.py PromptSettings.llm_model).
const char* kLlmWithHistory =
    "The following is a friendly conversation between a human and an AI.\n"
    "The AI is talkative and provides lots of specific details from its context.\n"
    "If the AI does not know the answer to a question, it truthfully says it does not know.\n\n"
    "Current conversation:\n"
    "{{history}}\n"
    "Human: {{input}}\n"
    "AI:";

// The sections pdsd fills, the variables it fills in each, and the names a request may leave out.
struct Filled {
    const char* type;
    std::vector<std::string> variables;
    std::vector<std::string> required;
};
const std::vector<Filled>& filled_sections() {
    static const std::vector<Filled> f = {{"llm_model", {"input", "history"}, {"default"}},
                                          {"rag", {"context", "question"}, {"default", "empty"}}};
    return f;
}

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

std::string line_of(const YAML::Node& n) { return "line " + std::to_string(n.Mark().line + 1); }

// One section's mapping: name -> template text, checked.
std::vector<std::pair<std::string, std::string>> read_section(const std::string& file, const std::string& type, const YAML::Node& node) {
    if (!node.IsMap())
        throw ConfigError(ErrorInfo{file}.at(line_of(node) + ", section '" + type + "'").msg("a prompt section must be a mapping")
                              .expected("name: template lines under '" + type + ":'").found(node.IsSequence() ? "a list" : "a single value"));
    const Filled* filled = nullptr;
    for (auto& f : filled_sections())
        if (type == f.type) filled = &f;
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& kv : node) {
        const std::string name = kv.first.as<std::string>();
        const std::string where = line_of(kv.second) + ", " + type + "." + name;
        if (!kv.second.IsScalar() || kv.second.IsNull())
            throw ConfigError(ErrorInfo{file}.at(where).msg("a prompt template must be text").expected("a string (e.g. a | block)")
                                  .found(kv.second.IsNull() ? "nothing" : kv.second.IsMap() ? "a mapping" : "a list"));
        std::string text = kv.second.as<std::string>();
        if (filled) {
            if (text.find("{%") != std::string::npos)
                throw ConfigError(ErrorInfo{file}.at(where).msg("jinja2 statements ({% ... %}) are not supported")
                                      .hint("pdsd fills only the variables {{" + join(filled->variables) + "}}"));
            for (auto& v : template_variables(text))
                if (std::find(filled->variables.begin(), filled->variables.end(), v) == filled->variables.end())
                    throw ConfigError(ErrorInfo{file}.at(where).msg("unknown template variable {{" + v + "}}")
                                          .expected("one of " + join(filled->variables)).found(v));
        }
        out.emplace_back(name, std::move(text));
    }
    return out;
}

// A YAML block scalar of `text` under a key at `indent` spaces ("|" keeps one final newline,
// "|-" none, "|+" all; an indentation indicator when the first line starts with a space).
std::string block_scalar(const std::string& text, int indent) {
    size_t trailing = 0;
    while (trailing < text.size() && text[text.size() - 1 - trailing] == '\n') ++trailing;
    std::string out = trailing == 0 ? "|-" : trailing == 1 ? "|" : "|+";
    if (!text.empty() && text[0] == ' ') out += std::to_string(indent);
    out += "\n";
    const std::string pad(indent, ' ');
    size_t start = 0;
    const std::string body = text.substr(0, text.size() - trailing);
    while (start <= body.size()) {
        size_t end = body.find('\n', start);
        if (end == std::string::npos) end = body.size();
        const std::string line = body.substr(start, end - start);
        out += (line.empty() ? "" : pad + line) + "\n";
        start = end + 1;
    }
    for (size_t i = 1; i < trailing; ++i) out += "\n";
    return out;
}

}  // namespace

const std::string* PromptSettings::find(const std::string& type, const std::string& name) const {
    auto s = sections.find(type);
    if (s == sections.end()) return nullptr;
    for (auto& [n, text] : s->second)
        if (n == name) return &text;
    return nullptr;
}

std::vector<std::string> PromptSettings::names(const std::string& type) const {
    std::vector<std::string> out;
    if (auto s = sections.find(type); s != sections.end())
        for (auto& kv : s->second) out.push_back(kv.first);
    return out;
}

std::string PromptSettings::where() const {
    return source.empty() ? "the built-in defaults (no <root>/prompt_settings.yaml)" : source;
}

const std::string& PromptSettings::require(const std::string& type, const std::string& name, const std::string& field) const {
    if (const std::string* t = find(type, name)) return *t;
    std::vector<std::string> known = names(type);
    if (known.empty()) {
        std::vector<std::string> types;
        for (auto& kv : sections) types.push_back(kv.first);
        throw UsageError(ErrorInfo{}.at(field).msg("unknown prompt template type '" + type + "'").expected("one of " + join(types))
                             .found(type).hint("the types are the sections of " + where()));
    }
    throw UsageError(ErrorInfo{}.at(field).msg("unknown " + type + " prompt template '" + name + "'").expected("one of " + join(known))
                         .found(name).hint("add it under '" + type + ":' in " + where()));
}

PromptTemplates PromptSettings::rag(const std::string& prompt_name, const std::string& field) const {
    PromptTemplates t;
    t.with_context = require("rag", prompt_name, field);
    t.without_context = require("rag", "empty", field);
    return t;
}

PromptSettings default_prompt_settings() {
    const PromptTemplates rag;
    PromptSettings s;
    s.sections["llm_model"] = {{"default", "{{input}}"}, {"with_history", kLlmWithHistory}};
    s.sections["rag"] = {{"default", rag.with_context}, {"empty", rag.without_context}};
    return s;
}

PromptSettings load_prompt_settings(const std::string& root) {
    PromptSettings s = default_prompt_settings();
    const std::string file = (fs::path(root) / "prompt_settings.yaml").string();
    std::error_code ec;
    if (!fs::exists(file, ec)) return s;
    YAML::Node y;
    try {
        y = YAML::LoadFile(file);
    } catch (const YAML::BadFile&) {
        throw IoError(ErrorInfo{file}.msg("cannot read the prompt settings").hint("check the file's permissions"));
    } catch (const YAML::Exception& e) {
        throw ConfigError(ErrorInfo{file}.at("line " + std::to_string(e.mark.line + 1)).msg("invalid YAML: " + e.msg)
                              .hint("fix the YAML syntax (a template is best written as a | block)"));
    }
    s.source = file;
    if (y.IsNull()) return s;   // only comments: the defaults
    if (!y.IsMap())
        throw ConfigError(ErrorInfo{file}.msg("the prompt settings must be a mapping").expected("sections such as rag: and llm_model:")
                              .found(y.IsSequence() ? "a list" : "a single value"));
    try {
        for (const auto& kv : y) {
            const std::string type = kv.first.as<std::string>();
            s.sections[type] = read_section(file, type, kv.second);
        }
    } catch (const YAML::Exception& e) {   // a key that is not text
        throw ConfigError(ErrorInfo{file}.at("line " + std::to_string(e.mark.line + 1)).msg(e.msg));
    }
    for (auto& f : filled_sections())
        for (auto& name : f.required)
            if (!s.find(f.type, name))
                throw ConfigError(ErrorInfo{file}.at(std::string(f.type) + "." + name).msg("missing prompt template")
                                      .hint(std::string(f.type) + "." + name + " is used when a request names none" +
                                            (name == "empty" ? " (rag.empty: whenever no chunk is found)" : "") +
                                            "; restore it from `pdsd init` on an empty root"));
    return s;
}

std::string default_prompt_settings_yaml() {
    std::string out =
        "# pdsd prompt templates (pdsd init writes this file once; edit freely). Chatchat 0.3's\n"
        "# prompt_settings.yaml: jinja2 variables, {{ name }}; {% statements %} are not supported.\n"
        "# A section here replaces the built-in one; a request picks a template by name\n"
        "# (prompt_name; `pdsd chat --kb --prompt_name NAME`), and POST /server/get_prompt_template\n"
        "# {type, name} returns one. Sections pdsd does not fill (Chatchat's action_model, ...) may\n"
        "# be added; they are served but unused.\n";
    const PromptSettings d = default_prompt_settings();
    const std::pair<const char*, const char*> comments[] = {
        {"llm_model", "# Plain LLM chat: {{input}} (the question), {{history}}. pdsd's LLM chat sends the\n"
                      "# messages as they are, which is what \"default\" does.\n"},
        {"rag", "# Knowledge-base chat, file chat, pdsd chat --kb: {{context}} (the kept chunks, numbered\n"
                "# [1], [2], ...) and {{question}}. \"empty\" replaces the picked one when no chunk is kept.\n"}};
    for (auto& [type, comment] : comments) {
        out += std::string("\n") + comment + type + ":\n";
        for (auto& [name, text] : d.sections.at(type)) out += "  " + name + ": " + block_scalar(text, 4);
    }
    return out;
}

PromptSettings PromptSettingsCache::get() {
    const kb::FileStamp stamp = kb::file_stamp((fs::path(root_) / "prompt_settings.yaml").string());
    std::lock_guard<std::mutex> lock(mu_);
    if (loaded_ && stamp == stamp_) return value_;
    value_ = load_prompt_settings(root_);   // throws on a bad file: nothing cached
    stamp_ = stamp;
    loaded_ = true;
    return value_;
}

}  // namespace pdsd::rag
