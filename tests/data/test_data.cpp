// data module: dataset_info.json registry, json/jsonl reading, LF converters, problems.
#include "pdsd/data/dataset.h"

#include "test_util.h"

#include <fstream>

using namespace pdsd;
using namespace pdsd::data;
using ojson = nlohmann::ordered_json;

namespace {

std::string all(const Problems& ps) {
    std::string s;
    for (const auto& p : ps) s += p.format() + "\n";
    return s;
}

void write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

DatasetAttr attr_of(const std::string& entry_json) {
    Problems ps;
    Registry r = Registry::parse("{\"x\": " + entry_json + "}", "dataset_info.json", ".", ps);
    r.check_defined("x", ps);
    EXPECT_TRUE(ps.empty()) << all(ps);
    const DatasetAttr* a = r.find("x");
    return a ? *a : DatasetAttr{};
}

std::optional<Conversation> conv_of(const DatasetAttr& a, const std::string& record, Problems& ps) {
    RecordRef ref{"x", "f.json", 3, 10};
    return convert_record(a, ojson::parse(record), ref, ps);
}

std::string test_dir() { return test::source_dir() + "/tests/data/fixtures/bad"; }

}  // namespace

TEST(Registry, DefaultsFollowLlamaFactory) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json"})");
    EXPECT_EQ(a.formatting, Formatting::alpaca);
    EXPECT_EQ(a.prompt, "instruction");
    EXPECT_EQ(a.query, "input");
    EXPECT_EQ(a.response, "output");
    EXPECT_EQ(a.history, "");
    EXPECT_EQ(a.messages, "conversations");
    EXPECT_EQ(a.role_tag, "from");
    EXPECT_EQ(a.user_tag, "human");
    EXPECT_EQ(a.function_tag, "function_call");
    EXPECT_EQ(a.split, "train");
}

TEST(Registry, ColumnsNotNamedBecomeUnset) {
    // LF DatasetAttr.join: with "columns", every column not listed is None.
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "columns": {"prompt": "q", "response": "a"}})");
    EXPECT_EQ(a.prompt, "q");
    EXPECT_EQ(a.response, "a");
    EXPECT_EQ(a.query, "");
}

TEST(Registry, UnknownKeyIsAnErrorWithDidYouMean) {
    Problems ps;
    Registry r = Registry::parse(R"({"d": {"file_name": "a.json", "format": "sharegpt"}})", "info.json", ".", ps);
    EXPECT_TRUE(ps.empty());  // entry problems surface when the dataset is asked for
    EXPECT_TRUE(r.check_defined("d", ps));
    ASSERT_EQ(ps.size(), 1u) << all(ps);
    std::string m = ps[0].format();
    EXPECT_NE(m.find("info.json"), std::string::npos) << m;
    EXPECT_NE(m.find("entry \"d\""), std::string::npos) << m;
    EXPECT_NE(m.find("unknown key \"format\""), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean \"formatting\""), std::string::npos) << m;
    EXPECT_EQ(r.find("d"), nullptr);
}

TEST(Registry, UnknownColumnAndTagKeys) {
    Problems ps;
    Registry::parse(R"({"d": {"file_name": "a.json", "formatting": "sharegpt", "columns": {"mesages": "c"}, "tags": {"role_tga": "r"}}})",
                    "info.json", ".", ps).check_defined("d", ps);
    std::string m = all(ps);
    EXPECT_NE(m.find("did you mean \"messages\""), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean \"role_tag\""), std::string::npos) << m;
}

TEST(Registry, HubSourcesAreRefused) {
    Problems ps;
    Registry::parse(R"({"d": {"hf_hub_url": "x/y"}})", "info.json", ".", ps).check_defined("d", ps);
    ASSERT_EQ(ps.size(), 1u) << all(ps);
    EXPECT_NE(ps[0].format().find("no network"), std::string::npos) << all(ps);
    EXPECT_NE(ps[0].format().find("file_name"), std::string::npos);
}

TEST(Registry, WrongTypesAndFormatting) {
    Problems ps;
    Registry::parse(R"({"d": {"file_name": 3, "formatting": "shargpt", "num_samples": "ten"}})", "info.json", ".", ps).check_defined("d", ps);
    std::string m = all(ps);
    EXPECT_NE(m.find("key \"file_name\": wrong type (expected a string, found a number)"), std::string::npos) << m;
    EXPECT_NE(m.find("unknown formatting (expected \"alpaca\", \"sharegpt\" or \"openai\", found \"shargpt\")"), std::string::npos) << m;
    EXPECT_NE(m.find("num_samples"), std::string::npos) << m;
}

TEST(Registry, UndefinedDatasetDidYouMean) {
    Problems ps;
    Registry r = Registry::parse(R"({"alpaca_zh_demo": {"file_name": "a.json"}})", "info.json", ".", ps);
    EXPECT_FALSE(r.check_defined("alpaca_zh_dem", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("undefined dataset \"alpaca_zh_dem\""), std::string::npos);
    EXPECT_NE(ps[0].format().find("did you mean \"alpaca_zh_demo\""), std::string::npos);
}

TEST(Registry, MalformedRegistryReportsLineAndColumn) {
    Problems ps;
    Registry::parse("{\n  \"d\": {\"file_name\": \"a.json\"\n}", "info.json", ".", ps);
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("info.json: line 3"), std::string::npos) << all(ps);
}

TEST(Alpaca, InstructionAndInputJoinedWithNewline) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json"})");
    Problems ps;
    auto c = conv_of(a, R"({"instruction": "翻译", "input": "你好", "output": "hello"})", ps);
    ASSERT_TRUE(c) << all(ps);
    ASSERT_EQ(c->messages.size(), 2u);
    EXPECT_EQ(c->messages[0].content, "翻译\n你好");
    EXPECT_EQ(c->messages[0].role, Role::user);
    EXPECT_EQ(c->messages[1].content, "hello");
    EXPECT_EQ(c->messages[1].role, Role::assistant);
    auto d = conv_of(a, R"({"instruction": "", "input": "only input", "output": "x"})", ps);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->messages[0].content, "only input");
}

TEST(Alpaca, HistoryPairsBecomeTurns) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system"}})");
    Problems ps;
    auto c = conv_of(a, R"({"instruction": "q2", "input": "", "output": "a2", "history": [["q0", "a0"], ["q1", "a1"]], "system": "sys"})", ps);
    ASSERT_TRUE(c) << all(ps);
    ASSERT_EQ(c->messages.size(), 6u);
    EXPECT_EQ(c->messages[0].content, "q0");
    EXPECT_EQ(c->messages[3].content, "a1");
    EXPECT_EQ(c->messages[4].content, "q2");
    EXPECT_EQ(c->system, "sys");
}

TEST(Alpaca, ProblemsNameRecordFieldExpectedFound) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json"})");
    Problems ps;
    EXPECT_FALSE(conv_of(a, R"({"instruction": 1, "input": "", "output": "x"})", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_EQ(ps[0].format(),
              "dataset 'x': f.json: record 3 (line 10) field \"instruction\": wrong type (expected a string, found a number 1)");
    ps.clear();
    EXPECT_FALSE(conv_of(a, R"({"instruction": "q", "input": "", "output": ""})", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("field \"output\": empty response"), std::string::npos);
    ps.clear();
    EXPECT_FALSE(conv_of(a, R"({"conversations": []})", ps));
    EXPECT_NE(all(ps).find("missing required column"), std::string::npos);
    EXPECT_NE(all(ps).find("looks like sharegpt"), std::string::npos) << all(ps);
}

TEST(Alpaca, LeftoverPlaceholder) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json"})");
    Problems ps;
    EXPECT_FALSE(conv_of(a, R"({"instruction": "你是谁", "input": "", "output": "我是 {{name}}"})", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("leftover placeholder {{name}}"), std::string::npos) << all(ps);
}

TEST(ShareGpt, SystemLiftedAndRolesMapped) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}})");
    Problems ps;
    auto c = conv_of(a, R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
        {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"}, {"from": "observation", "value": "r"},
        {"from": "gpt", "value": "a"}], "tools": "[]"})", ps);
    ASSERT_TRUE(c) << all(ps);
    EXPECT_EQ(c->system, "S");
    EXPECT_EQ(c->tools, "[]");
    ASSERT_EQ(c->messages.size(), 4u);
    EXPECT_EQ(c->messages[1].role, Role::function);
    EXPECT_EQ(c->messages[2].role, Role::observation);
    EXPECT_EQ(c->messages[3].role, Role::assistant);
}

TEST(ShareGpt, BadRoleOrderAndOddCount) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "formatting": "sharegpt"})");
    Problems ps;
    EXPECT_FALSE(conv_of(a, R"({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}]})", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("field \"conversations[1].from\": bad role order (expected \"gpt\" or \"function_call\" at turn 1"),
              std::string::npos) << all(ps);
    ps.clear();
    EXPECT_FALSE(conv_of(a, R"({"conversations": [{"from": "human", "value": "q"}]})", ps));
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("odd message count"), std::string::npos);
    EXPECT_NE(ps[0].format().find("found 1 messages"), std::string::npos);
}

TEST(ShareGpt, CustomTags) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}})");
    Problems ps;
    auto c = conv_of(a, R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})", ps);
    ASSERT_TRUE(c) << all(ps);
    EXPECT_EQ(c->system, "S");
    EXPECT_EQ(c->messages.size(), 2u);
}

TEST(OpenAi, ToolCallsAndMergedToolResults) {
    DatasetAttr a = attr_of(R"({"file_name": "a.json", "formatting": "openai", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}})");
    Problems ps;
    auto c = conv_of(a, R"({"messages": [{"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "done"}]})", ps);
    ASSERT_TRUE(c) << all(ps);
    ASSERT_EQ(c->messages.size(), 4u);
    EXPECT_EQ(c->messages[1].role, Role::function);
    EXPECT_EQ(c->messages[1].content, R"([{"name": "f", "arguments": {"x": 1}}])");
    EXPECT_EQ(c->messages[2].role, Role::observation);
    EXPECT_EQ(c->messages[2].content, "r1\n</tool_response>\n<tool_response>\nr2");
}

TEST(Files, JsonArrayAndJsonlStreamWithLineNumbers) {
    test::TempDir dir;
    write(dir.file("dataset_info.json"), R"({"a": {"file_name": "a.json"}, "b": {"file_name": "b.jsonl"}})");
    write(dir.file("a.json"), "[\n {\"instruction\": \"q\", \"input\": \"\", \"output\": \"x\"},\n {\"instruction\": \"q2\", \"output\": \"y\"}\n]\n");
    write(dir.file("b.jsonl"), "{\"instruction\": \"q\", \"output\": \"x\"}\n\n{\"instruction\": \"q\", \"output\": 5}\n");
    Problems ps;
    Registry r = Registry::load(dir.str(), ps);
    std::vector<RecordRef> refs;
    int64_t n = for_each_dataset_conversation(r, {"a", "b"}, ps, [&](const RecordRef& ref, const Conversation&) { refs.push_back(ref); });
    EXPECT_EQ(n, 4);
    ASSERT_EQ(refs.size(), 3u);
    EXPECT_EQ(refs[1].index, 1);
    EXPECT_EQ(refs[1].line, 3);
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("b.jsonl: record 1 (line 3) field \"output\": wrong type"), std::string::npos) << all(ps);
}

TEST(Files, MalformedJsonNamesLineColumn) {
    Problems ps;
    Registry r = Registry::load(test_dir(), ps);
    ps.clear();
    for_each_dataset_conversation(r, {"bad_syntax"}, ps, [](const RecordRef&, const Conversation&) {});
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].format().find("bad_syntax.json: record 1 (line 3, column 29): invalid JSON"), std::string::npos) << all(ps);
}

TEST(Files, NonUtf8BytesAreReportedNotCrashing) {
    Problems ps;
    Registry r = Registry::load(test_dir(), ps);
    ps.clear();
    int usable = 0;
    for_each_dataset_conversation(r, {"not_utf8"}, ps, [&](const RecordRef&, const Conversation&) { ++usable; });
    EXPECT_EQ(usable, 1);
    std::string m = all(ps);
    EXPECT_NE(m.find("not_utf8.jsonl: record 1 (line 2, column 18): non-UTF-8 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("iconv"), std::string::npos);
    EXPECT_NE(m.find("record 2 (line 3, column 37): invalid JSON"), std::string::npos) << m;
}

TEST(Files, BrokenArrayStructure) {
    test::TempDir dir;
    write(dir.file("dataset_info.json"), R"({"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}, "c": {"file_name": "c.json"}})");
    write(dir.file("a.json"), "{\"instruction\": \"q\"}");           // not an array
    write(dir.file("b.json"), "[{\"instruction\": \"q\", \"output\": \"x\"}");  // truncated
    write(dir.file("c.json"), "");
    Problems ps;
    Registry r = Registry::load(dir.str(), ps);
    for_each_dataset_conversation(r, {"a", "b", "c"}, ps, [](const RecordRef&, const Conversation&) {});
    std::string m = all(ps);
    EXPECT_NE(m.find("a.json: line 1, column 1: invalid JSON: the file does not start with '['"), std::string::npos) << m;
    EXPECT_NE(m.find("b.json: line 1, column 37: invalid JSON: unexpected end of file"), std::string::npos) << m;
    EXPECT_NE(m.find("c.json: line 1, column 1: invalid JSON: empty file"), std::string::npos) << m;
}

TEST(Files, NumSamplesTakesFirstAndCycles) {
    test::TempDir dir;
    write(dir.file("dataset_info.json"), R"({"a": {"file_name": "a.jsonl", "num_samples": 5}})");
    write(dir.file("a.jsonl"), "{\"instruction\": \"0\", \"output\": \"x\"}\n{\"instruction\": \"1\", \"output\": \"x\"}\n");
    std::vector<std::string> seen;
    Problems ps;
    Registry r = Registry::load(dir.str(), ps);
    for_each_dataset_conversation(r, {"a"}, ps, [&](const RecordRef&, const Conversation& c) { seen.push_back(c.messages[0].content); });
    EXPECT_EQ(seen, (std::vector<std::string>{"0", "1", "0", "1", "0"}));
}

TEST(Files, LoadConversationsThrowsListingAllProblems) {
    try {
        load_conversations(test_dir(), {"bad_types", "bad_roles"});
        FAIL() << "expected DataError";
    } catch (const DataError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("10 dataset problem(s)"), std::string::npos) << m;
        EXPECT_NE(m.find("pdsd data validate"), std::string::npos) << m;
    }
}

TEST(Files, DemoDatasetsAreClean) {
    std::string dir = test::source_dir() + "/data";
    auto convs = load_conversations(dir, {"helpdesk_alpaca_zh", "helpdesk_sharegpt_zh", "identity_zh", "product_faq_zh"});
    EXPECT_GE(convs.size(), 60u);
}

TEST(Utf8, Validation) {
    EXPECT_EQ(find_invalid_utf8("abc 你好"), std::string_view::npos);
    EXPECT_EQ(find_invalid_utf8("ab\xC4\xE3"), 2u);
    EXPECT_EQ(find_invalid_utf8("\xC0\x80"), 0u);          // overlong
    EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);      // surrogate
    EXPECT_EQ(find_invalid_utf8("\xF0\x9F\x98\x80"), std::string_view::npos);
}
