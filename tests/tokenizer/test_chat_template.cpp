// tokenizer/chat_template: Qwen2.5 inference rendering, LF `qwen` training template with a
// fake byte tokenizer, and the golden from LLaMA-Factory itself (lf_qwen_template.json).
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/dataset_check.h"
#include "pdsd/tokenizer/tokenizer.h"

#include "pdsd/core/file_util.h"

#include "test_util.h"

using namespace pdsd;
using namespace pdsd::tokenizer;
using data::Conversation;
using data::Role;
using ojson = nlohmann::ordered_json;

namespace {

// Special tokens get ids 1000+, every other byte is its own token: slot boundaries and
// truncation are easy to reason about.
std::vector<int32_t> fake_encode(std::string_view text) {
    static const std::vector<std::string> specials = {"<|im_start|>", "<|im_end|>"};
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
        bool matched = false;
        for (size_t k = 0; k < specials.size(); ++k)
            if (text.compare(i, specials[k].size(), specials[k]) == 0) {
                ids.push_back(1000 + static_cast<int32_t>(k));
                i += specials[k].size();
                matched = true;
                break;
            }
        if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
    }
    return ids;
}

std::string fake_decode(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += id == 1000 ? "<|im_start|>" : id == 1001 ? "<|im_end|>" : std::string(1, static_cast<char>(id));
    return s;
}

std::string trained_text(const EncodedExample& ex) {
    std::vector<int32_t> t;
    for (size_t i = 0; i < ex.labels.size(); ++i)
        if (ex.labels[i] != IGNORE_INDEX) t.push_back(ex.input_ids[i]);
    return fake_decode(t);
}

Conversation conv(std::vector<std::pair<Role, std::string>> msgs, std::string system = "", std::string tools = "") {
    Conversation c;
    c.system = std::move(system);
    c.tools = std::move(tools);
    for (auto& m : msgs) c.messages.push_back({m.first, m.second});
    return c;
}

const std::string kSys = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";

}  // namespace

TEST(RenderQwenChat, DefaultSystemAndGenerationPrompt) {
    EXPECT_EQ(render_qwen_chat({{"user", "你好"}}),
              kSys + "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(render_qwen_chat({{"system", "S"}, {"user", "q"}, {"assistant", "a"}}, false),
              "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n");
}

TEST(InferSeqlen, LlamaFactoryBudgetRule) {
    using P = std::pair<int64_t, int64_t>;
    EXPECT_EQ(infer_seqlen(10, 5, 100), P(10, 5));
    EXPECT_EQ(infer_seqlen(100, 10, 50), P(40, 10));   // truncate source
    EXPECT_EQ(infer_seqlen(10, 100, 50), P(10, 40));   // truncate target
    EXPECT_EQ(infer_seqlen(100, 300, 50), P(13, 37));  // both: int(50*0.75)=37
    EXPECT_EQ(infer_seqlen(3, 3, 1), P(1, 0));          // both: int(1*0.5)=0 target, source gets the 1
}

TEST(QwenTrainTemplate, SlotsAreTokenizedSeparatelyAndPromptMasked) {
    QwenTrainTemplate tpl(fake_encode);
    Conversation c = conv({{Role::user, "你好"}, {Role::assistant, "您好！"}, {Role::user, "q"}, {Role::assistant, "a"}});
    auto slots = tpl.slots(c);
    ASSERT_EQ(slots.size(), 4u);
    ASSERT_EQ(slots[0].size(), 2u);  // system block + user slot, two encode calls
    EXPECT_EQ(slots[0][0], kSys);
    EXPECT_EQ(slots[1][0], "您好！<|im_end|>\n");
    EncodedExample ex = tpl.encode(c);
    EXPECT_EQ(fake_decode(ex.input_ids),
              kSys + "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n您好！<|im_end|>\n"
                     "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n");
    EXPECT_EQ(trained_text(ex), "您好！<|im_end|>\na<|im_end|>\n");  // history responses are trained
    EXPECT_FALSE(ex.truncated);
    EXPECT_EQ(ex.full_length, static_cast<int64_t>(ex.input_ids.size()));
}

TEST(QwenTrainTemplate, TrainOnPromptMaskHistoryDefaultSystem) {
    Conversation c = conv({{Role::user, "q1"}, {Role::assistant, "a1"}, {Role::user, "q2"}, {Role::assistant, "a2"}});
    TemplateOptions o;
    o.train_on_prompt = true;
    EncodedExample all = QwenTrainTemplate(fake_encode, o).encode(c);
    EXPECT_EQ(all.labels, all.input_ids);
    o = {};
    o.mask_history = true;
    EXPECT_EQ(trained_text(QwenTrainTemplate(fake_encode, o).encode(c)), "a2<|im_end|>\n");
    o = {};
    o.default_system = "S";
    EncodedExample ds = QwenTrainTemplate(fake_encode, o).encode(c);
    EXPECT_EQ(fake_decode(ds.input_ids).rfind("<|im_start|>system\nS<|im_end|>\n<|im_start|>user", 0), 0u);
    Conversation own = c;
    own.system = "Mine";
    EXPECT_EQ(fake_decode(QwenTrainTemplate(fake_encode, o).encode(own).input_ids).rfind("<|im_start|>system\nMine<|im_end|>\n", 0), 0u);
}

TEST(QwenTrainTemplate, CutoffTruncatesAndFlagsLostImEnd) {
    Conversation c = conv({{Role::user, "q"}, {Role::assistant, std::string(200, 'x')}});
    TemplateOptions o;
    o.cutoff_len = 64;
    EncodedExample ex = QwenTrainTemplate(fake_encode, o).encode(c);
    EXPECT_EQ(ex.input_ids.size(), 64u);
    EXPECT_TRUE(ex.truncated);
    EXPECT_TRUE(ex.response_lost_eos);
    EXPECT_GT(ex.full_length, 64);
    // Long prompt, short answer: the source is cut (losing "<|im_start|>assistant\n"), the answer survives.
    Conversation p = conv({{Role::user, std::string(500, 'p')}, {Role::assistant, "ok"}});
    EncodedExample px = QwenTrainTemplate(fake_encode, o).encode(p);
    EXPECT_EQ(px.input_ids.size(), 64u);
    EXPECT_FALSE(px.response_lost_eos);
    EXPECT_EQ(trained_text(px), "ok<|im_end|>\n");
}

TEST(QwenTrainTemplate, MaskHistoryGivesLastTurnPriority) {
    Conversation c = conv({{Role::user, std::string(100, 'a')}, {Role::assistant, std::string(100, 'b')},
                           {Role::user, "q"}, {Role::assistant, "last"}});
    TemplateOptions o;
    o.cutoff_len = 40;
    o.mask_history = true;
    EncodedExample ex = QwenTrainTemplate(fake_encode, o).encode(c);
    EXPECT_EQ(trained_text(ex), "last<|im_end|>\n");
    std::string text = fake_decode(ex.input_ids);
    EXPECT_EQ(text.substr(text.size() - 15), "last<|im_end|>\n");
}

TEST(QwenTrainTemplate, FunctionCallsToolsAndObservation) {
    std::string tools = R"([{"name": "query_ticket", "description": "查询", "parameters": {"type": "object"}}])";
    Conversation c = conv({{Role::user, "查"}, {Role::function, R"({"name": "query_ticket", "arguments": {"id": "1"}})"},
                           {Role::observation, "ok"}, {Role::assistant, "好"}}, "S", tools);
    QwenTrainTemplate tpl(fake_encode);
    auto s = tpl.slots(c);
    EXPECT_NE(s[0][0].find("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"query_ticket\", \"description\": \"查询\", "
                           "\"parameters\": {\"type\": \"object\"}}}\n</tools>"), std::string::npos) << s[0][0];
    EXPECT_EQ(s[1][0], "<tool_call>\n{\"name\": \"query_ticket\", \"arguments\": {\"id\": \"1\"}}\n</tool_call><|im_end|>\n");
    EXPECT_EQ(s[2][0], "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
    Conversation bad = conv({{Role::user, "q"}, {Role::function, "not json"}});
    EXPECT_THROW(tpl.encode(bad), DataError);
}

TEST(QwenTrainTemplate, EncodeConversationsMatchesEncode) {
    QwenTrainTemplate tpl(fake_encode);
    std::vector<Conversation> convs;
    for (int i = 0; i < 300; ++i) convs.push_back(conv({{Role::user, "q" + std::to_string(i)}, {Role::assistant, "a"}}));
    auto exs = encode_conversations(tpl, convs, 2);
    ASSERT_EQ(exs.size(), 300u);
    EXPECT_EQ(exs[123].input_ids, tpl.encode(convs[123]).input_ids);
    EXPECT_EQ(exs[299].labels, tpl.encode(convs[299]).labels);
}

TEST(PythonJsonDumps, MatchesJsonDumpsEnsureAsciiFalse) {
    auto v = ojson::parse(R"({"b": 1, "a": [true, null, 2.5, "x\"\n\u0001中"], "c": {}})");
    EXPECT_EQ(python_json_dumps(v), "{\"b\": 1, \"a\": [true, null, 2.5, \"x\\\"\\n\\u0001中\"], \"c\": {}}");
}

TEST(TokenStats, HistogramTruncatedLostEos) {
    QwenTrainTemplate tpl(fake_encode, TemplateOptions{200});  // the default system block alone is ~80 fake tokens
    std::vector<Conversation> convs;
    for (int i = 0; i < 200; ++i) convs.push_back(conv({{Role::user, "q"}, {Role::assistant, std::string(i % 2 ? 500 : 5, 'x')}}));
    TokenStats st;
    accumulate_token_stats(tpl, convs, st, 2);
    EXPECT_EQ(st.examples, 200);
    EXPECT_EQ(st.truncated, 100);
    EXPECT_EQ(st.lost_eos, 100);
    EXPECT_EQ(st.histogram[6], 100);  // > 2x cutoff
}

TEST(DataCheck, DemoDataCleanAndBadFixturesListed) {
    DataCheckOptions o;
    o.dataset_dir = test::source_dir() + "/data";
    o.datasets = {"helpdesk_alpaca_zh", "helpdesk_sharegpt_zh", "identity_zh", "product_faq_zh"};
    EncodeFn enc = fake_encode;
    DataCheckReport r = check_datasets(o, &enc);
    EXPECT_TRUE(r.clean()) << format_report(r, o);
    ASSERT_TRUE(r.datasets[0].tokens);
    EXPECT_EQ(r.datasets[0].tokens->examples, r.datasets[0].usable);
    o.dataset_dir = test::source_dir() + "/tests/data/fixtures/bad";
    o.datasets = {"bad_types", "bad_roles", "nope"};
    r = check_datasets(o, nullptr);
    EXPECT_EQ(r.problems.size(), 11u) << format_report(r, o);
    auto j = report_to_json(r, o);
    EXPECT_FALSE(j["clean"].get<bool>());
    EXPECT_EQ(j["problems"][0]["file"].get<std::string>().substr(j["problems"][0]["file"].get<std::string>().size() - 14), "bad_types.json");
}

TEST(DataCheck, PreviewMarksTrainedSpans) {
    DataCheckOptions o;
    o.dataset_dir = test::source_dir() + "/data";
    EncodeFn enc = fake_encode;
    std::function<std::string(const std::vector<int32_t>&)> dec = fake_decode;
    std::string p = preview_example(o, "identity_zh", 0, &enc, &dec, false);
    EXPECT_NE(p.find("<|im_start|>assistant\n[["), std::string::npos) << p;
    EXPECT_NE(p.find("<|im_end|>\n]]"), std::string::npos) << p;
    EXPECT_NE(p.find("# tokens: "), std::string::npos);
    std::string q = preview_example(o, "identity_zh", 0, nullptr, nullptr, false);
    EXPECT_NE(q.find("[["), std::string::npos) << q;
    EXPECT_THROW(preview_example(o, "identity_zh", 999, nullptr, nullptr, false), DataError);
}

// ---------------------------------------------------------------- LLaMA-Factory golden

namespace {
ojson load_golden() {
    return ojson::parse(read_file(test::source_dir() + "/tests/data/golden/lf_qwen_template.json"));
}
std::optional<Conversation> convert_case(const ojson& c, data::Problems& ps) {
    ojson reg = ojson::object();
    reg["case"] = c["entry"];
    data::Registry r = data::Registry::parse(reg.dump(), "golden entry", ".", ps);
    const data::DatasetAttr* a = r.find("case");
    if (!a) return std::nullopt;
    data::RecordRef ref{c["name"].get<std::string>(), "golden", 0, 0};
    return data::convert_record(*a, c["record"], ref, ps);
}
TemplateOptions options_of(const ojson& c) {
    TemplateOptions o;
    const ojson& j = c["options"];
    if (j.contains("cutoff_len")) o.cutoff_len = j["cutoff_len"].get<int64_t>();
    if (j.contains("train_on_prompt")) o.train_on_prompt = j["train_on_prompt"].get<bool>();
    if (j.contains("mask_history")) o.mask_history = j["mask_history"].get<bool>();
    if (j.contains("default_system")) o.default_system = j["default_system"].get<std::string>();
    return o;
}
}  // namespace

TEST(LlamaFactoryGolden, ConvertersMatch) {
    ojson g = load_golden();
    ASSERT_GT(g["cases"].size(), 100u);
    for (const auto& c : g["cases"]) {
        data::Problems ps;
        auto conv = convert_case(c, ps);
        std::string msg;
        for (const auto& p : ps) msg += p.format() + "\n";
        ASSERT_TRUE(conv) << c["name"] << "\n" << msg;
        const ojson& want = c["conversation"];
        EXPECT_EQ(conv->system, want["system"].get<std::string>()) << c["name"];
        EXPECT_EQ(conv->tools, want["tools"].get<std::string>()) << c["name"];
        ASSERT_EQ(conv->messages.size(), want["messages"].size()) << c["name"];
        for (size_t i = 0; i < conv->messages.size(); ++i) {
            EXPECT_EQ(data::role_name(conv->messages[i].role), want["messages"][i]["role"].get<std::string>()) << c["name"];
            EXPECT_EQ(conv->messages[i].content, want["messages"][i]["content"].get<std::string>()) << c["name"];
        }
    }
}

TEST(LlamaFactoryGolden, InputIdsAndLabelsExact) {
    ojson g = load_golden();
    Tokenizer tok = Tokenizer::load(test::fixtures() + "/qwen-tokenizer");
    EncodeFn enc = encoder_of(tok);
    int checked = 0;
    for (const auto& c : g["cases"]) {
        data::Problems ps;
        auto conv = convert_case(c, ps);
        ASSERT_TRUE(conv) << c["name"];
        QwenTrainTemplate tpl(enc, options_of(c));
        EncodedExample ex = tpl.encode(*conv);
        EXPECT_EQ(ex.input_ids, c["input_ids"].get<std::vector<int32_t>>()) << c["name"];
        EXPECT_EQ(ex.labels, c["labels"].get<std::vector<int32_t>>()) << c["name"];
        ++checked;
    }
    EXPECT_EQ(checked, static_cast<int>(g["cases"].size()));
}
