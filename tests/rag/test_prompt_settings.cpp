// rag::PromptSettings: <root>/prompt_settings.yaml (Chatchat's sections) over the built-in
// defaults, the file pdsd init writes, the named template a RAG turn fills, and the errors of
// an unknown name or a broken file.
#include "pdsd/core/error.h"
#include "pdsd/rag/prompt.h"
#include "pdsd/rag/prompt_settings.h"
#include "test_util.h"

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace pdsd;

namespace {

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

kb::SearchHit hit(const std::string& text) {
    kb::SearchHit h;
    h.text = text;
    return h;
}

// The message of the exception `f` throws as E ("" when it throws nothing).
template <class E, class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

const char* kOverride = R"(# a user's file
rag:
  default: |
    资料：{{context}}
    问题：{{ question }}
  empty: "没有资料。{{question}}"
  concise: |-
    简短回答。{{context}}|{{question}}
)";

}  // namespace

TEST(PromptSettings, MissingFileGivesChatchatsDefaults) {
    test::TempDir root;
    rag::PromptSettings s = rag::load_prompt_settings(root.str());
    EXPECT_EQ(s.source, "");
    EXPECT_EQ(s.names("rag"), (std::vector<std::string>{"default", "empty"}));
    EXPECT_EQ(s.names("llm_model"), (std::vector<std::string>{"default", "with_history"}));
    EXPECT_EQ(*s.find("llm_model", "default"), "{{input}}");
    EXPECT_EQ(*s.find("rag", "empty"), "请你回答我的问题:\n{{question}}");
    EXPECT_EQ(s.find("rag", "nope"), nullptr);
    const rag::PromptTemplates t = s.rag("default");
    EXPECT_EQ(t.with_context, rag::PromptTemplates{}.with_context);
    EXPECT_EQ(t.without_context, rag::PromptTemplates{}.without_context);
    EXPECT_NE(t.with_context.find("【已知信息】{{context}}"), std::string::npos);
}

TEST(PromptSettings, TheFileInitWritesLoadsAsTheDefaults) {
    test::TempDir root;
    const std::string text = rag::default_prompt_settings_yaml();
    EXPECT_EQ(text.rfind("# pdsd prompt templates", 0), 0u) << "commented";
    write(root.file("prompt_settings.yaml"), text);
    rag::PromptSettings s = rag::load_prompt_settings(root.str());
    EXPECT_EQ(s.source, root.file("prompt_settings.yaml"));
    EXPECT_EQ(s.sections, rag::default_prompt_settings().sections);   // every byte, trailing newlines included
}

TEST(PromptSettings, TheFileReplacesItsSectionsAndNamesATemplate) {
    test::TempDir root;
    write(root.file("prompt_settings.yaml"), kOverride);
    rag::PromptSettings s = rag::load_prompt_settings(root.str());
    EXPECT_EQ(s.names("rag"), (std::vector<std::string>{"default", "empty", "concise"}));   // file order
    EXPECT_EQ(s.names("llm_model"), rag::default_prompt_settings().names("llm_model"));      // not in the file: kept
    // The named template with chunks (numbered), rag.empty without; spaces inside {{ }} allowed.
    const std::vector<kb::SearchHit> hits = {hit("甲"), hit("乙")};
    EXPECT_EQ(rag::build_user_message("怎么办？", hits, s.rag("default")), "资料：[1] 甲\n\n[2] 乙\n问题：怎么办？\n");
    EXPECT_EQ(rag::build_user_message("怎么办？", hits, s.rag("concise")), "简短回答。[1] 甲\n\n[2] 乙|怎么办？");
    EXPECT_EQ(rag::build_user_message("怎么办？", {}, s.rag("concise")), "没有资料。怎么办？");
    // A question holding a variable stays literal (one pass).
    EXPECT_EQ(rag::build_user_message("{{context}}?", {}, s.rag("default")), "没有资料。{{context}}?");
}

TEST(PromptSettings, UnknownNameNamesTheFieldTheKnownNamesAndTheFile) {
    test::TempDir root;
    write(root.file("prompt_settings.yaml"), kOverride);
    rag::PromptSettings s = rag::load_prompt_settings(root.str());
    const std::string e = error_of<UsageError>([&] { s.rag("longer", "--prompt_name"); });
    EXPECT_NE(e.find("--prompt_name"), std::string::npos) << e;
    EXPECT_NE(e.find("'longer'"), std::string::npos) << e;
    EXPECT_NE(e.find("default, empty, concise"), std::string::npos) << e;
    EXPECT_NE(e.find(root.file("prompt_settings.yaml")), std::string::npos) << e;
    const std::string t = error_of<UsageError>([&] { s.require("agent", "default", "type"); });
    EXPECT_NE(t.find("llm_model, rag"), std::string::npos) << t;
    // Without a file the hint says where the names come from.
    test::TempDir bare;
    const std::string d = error_of<UsageError>([&] { rag::load_prompt_settings(bare.str()).rag("x"); });
    EXPECT_NE(d.find("built-in defaults"), std::string::npos) << d;
}

TEST(PromptSettings, BadFilesNameTheFileAndLine) {
    test::TempDir root;
    const std::string file = root.file("prompt_settings.yaml");
    struct Case { const char* text; const char* where; const char* what; };
    const Case cases[] = {
        {"rag:\n  default: [unclosed\n  empty: x\n", "line 3", "invalid YAML"},
        {"rag:\n  - default\n", "line 2", "must be a mapping"},
        {"rag:\n  default:\n  empty: \"{{question}}\"\n", "rag.default", "must be text"},
        {"rag:\n  default: \"{{context}} {{question}}\"\n", "rag.empty", "missing prompt template"},
        {"rag:\n  default: \"{{context}} {{quest}}\"\n  empty: \"{{question}}\"\n", "line 2", "unknown template variable {{quest}}"},
        {"rag:\n  default: \"{% if context %}{{context}}{% endif %}\"\n  empty: \"{{question}}\"\n", "rag.default", "not supported"},
        {"- rag\n", "", "must be a mapping"},
    };
    for (const Case& c : cases) {
        write(file, c.text);
        const std::string e = error_of<ConfigError>([&] { rag::load_prompt_settings(root.str()); });
        EXPECT_NE(e.find(file), std::string::npos) << c.text << " -> " << e;
        EXPECT_NE(e.find(c.where), std::string::npos) << c.text << " -> " << e;
        EXPECT_NE(e.find(c.what), std::string::npos) << c.text << " -> " << e;
    }
    // Sections pdsd does not fill are kept as they are (Chatchat's f-string agent templates).
    write(file, "action_model:\n  qwen: \"Question: {input}\\n{agent_scratchpad}\"\n");
    rag::PromptSettings s = rag::load_prompt_settings(root.str());
    EXPECT_EQ(*s.find("action_model", "qwen"), "Question: {input}\n{agent_scratchpad}");
    EXPECT_EQ(s.names("rag"), (std::vector<std::string>{"default", "empty"}));
    // A file of comments only: the defaults.
    write(file, "# nothing yet\n");
    EXPECT_EQ(rag::load_prompt_settings(root.str()).sections, rag::default_prompt_settings().sections);
}

TEST(PromptSettings, CacheRereadsAChangedFile) {
    test::TempDir root;
    rag::PromptSettingsCache cache(root.str());
    EXPECT_EQ(cache.get().names("rag").size(), 2u);
    write(root.file("prompt_settings.yaml"), kOverride);
    EXPECT_EQ(cache.get().names("rag").size(), 3u);
    write(root.file("prompt_settings.yaml"), "rag: [\n");
    EXPECT_THROW(cache.get(), ConfigError);
    fs::remove(root.file("prompt_settings.yaml"));
    EXPECT_EQ(cache.get().source, "");
}

TEST(PromptTemplate, RenderFillsKnownVariablesOnce) {
    EXPECT_EQ(rag::render_template("{{a}}-{{ b }}-{{c}}-{{", {{"a", "{{b}}"}, {"b", "2"}}), "{{b}}-2-{{c}}-{{");
    EXPECT_EQ(rag::template_variables("x {{ context }} {{question}} {{ not a var }}"), (std::vector<std::string>{"context", "question"}));
}
