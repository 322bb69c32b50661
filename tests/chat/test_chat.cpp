// Chat session: streamed pieces, stop strings, history and RAG prompt assembly, on a
// tiny random-weight Qwen2 with the real Qwen tokenizer (made by pdsd model init's code).
#include "test_util.h"

#include "pdsd/chat/session.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/model/tools.h"

#include <filesystem>

using namespace pdsd;

namespace {
struct TinyChat {
    test::TempDir dir;
    std::string model_dir;
    std::unique_ptr<tokenizer::Tokenizer> tok;
    std::unique_ptr<model::Generator> gen;
    TinyChat() {
        model_dir = dir.file("tiny");
        model::InitOptions o;
        o.preset = "tiny";
        o.out_dir = model_dir;
        o.seed = 3;
        o.tokenizer_dir = test::fixtures() + "/qwen-tokenizer";
        model::init_random_checkpoint(o);
        tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(model_dir));
        gen = std::make_unique<model::Generator>(model::Generator::load(model_dir, "cpu", "fp32"));
    }
    chat::ChatOptions greedy(int64_t n) {
        chat::ChatOptions c;
        c.generation.do_sample = false;
        c.generation.max_new_tokens = n;
        c.generation.eos_token_id = std::vector<int64_t>{};  // random weights: never stop early
        return c;
    }
};
}  // namespace

TEST(Chat, StreamedPiecesEqualDecodedAnswer) {
    TinyChat t;
    chat::ChatSession s(t.gen.get(), t.tok.get(), nullptr, t.greedy(24));
    std::string streamed;
    chat::Answer a = s.ask("你好，请介绍一下你自己。", [&](std::string_view p) { streamed += p; });
    ASSERT_EQ(a.tokens.size(), 24u);
    std::vector<tokenizer::TokenId> ids(a.tokens.begin(), a.tokens.end());
    EXPECT_EQ(a.text, t.tok->decode(ids, /*skip_special_tokens=*/true));
    EXPECT_EQ(streamed, a.text);
    // The prompt is the Qwen2.5 template with the default system prompt.
    EXPECT_EQ(a.prompt_tokens, static_cast<int64_t>(t.tok->encode(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好，请介绍一下你自己。<|im_end|>\n<|im_start|>assistant\n").size()));
    // Same question again, fresh session: greedy is deterministic.
    chat::ChatSession s2(t.gen.get(), t.tok.get(), nullptr, t.greedy(24));
    EXPECT_EQ(s2.ask("你好，请介绍一下你自己。").tokens, a.tokens);
}

TEST(Chat, StopStringCutsAnswer) {
    TinyChat t;
    chat::ChatOptions o = t.greedy(24);
    chat::ChatSession probe(t.gen.get(), t.tok.get(), nullptr, o);
    std::string full = probe.ask("hello").text;
    ASSERT_GT(full.size(), 8u);
    // Stop at a string that starts inside the answer: the answer must end right before it.
    size_t cut = full.size() / 2;
    while (cut > 0 && (static_cast<unsigned char>(full[cut]) & 0xC0) == 0x80) --cut;  // char boundary
    o.stop = {full.substr(cut, 3)};
    size_t first = full.find(o.stop[0]);
    chat::ChatSession s(t.gen.get(), t.tok.get(), nullptr, o);
    std::string streamed;
    chat::Answer a = s.ask("hello", [&](std::string_view p) { streamed += p; });
    EXPECT_EQ(a.text, full.substr(0, first));
    EXPECT_EQ(streamed, a.text);
}

TEST(Chat, HistoryIsRenderedAndTrimmed) {
    TinyChat t;
    chat::ChatOptions o = t.greedy(4);
    o.history_len = 1;
    o.system = "S";
    chat::ChatSession s(t.gen.get(), t.tok.get(), nullptr, o);
    chat::Answer a1 = s.ask("q1");
    chat::Answer a2 = s.ask("q2");
    ASSERT_EQ(s.history().size(), 4u);
    std::string p = s.render_prompt("q3");
    EXPECT_EQ(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n" + a2.text +
                     "<|im_end|>\n<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n");
    s.reset();
    EXPECT_TRUE(s.history().empty());
}

TEST(Chat, RetrievalOnlyAnswerListsChunks) {
    test::TempDir root;
    kb::init_root(root.str(), test::source_dir() + "/share/samples");
    kb::UpdateOptions u;
    u.mode = kb::UpdateMode::recreate;
    u.progress = false;
    kb::update_knowledge_bases(root.str(), u);
    kb::KnowledgeBase base(root.str(), "samples");
    chat::ChatOptions o;
    o.search.top_k = 2;
    o.search.score_threshold = 0.0;
    chat::ChatSession s(nullptr, nullptr, &base, o);
    chat::Answer a = s.ask("安装");
    EXPECT_TRUE(a.retrieval_only);
    ASSERT_FALSE(a.sources.empty());
    EXPECT_LE(a.sources.size(), 2u);
    EXPECT_EQ(a.text.rfind("出处 [1] [" + a.sources[0].file_name + "] \n\n", 0), 0u) << a.text;
    EXPECT_NE(a.text.find(a.sources[0].text), std::string::npos);
    // The session's sources are the RAG turn's: the kept hits, and the prompt built from them.
    rag::RagTurn turn = rag::retrieve(base, "安装", o.search);
    ASSERT_EQ(turn.sources.size(), a.sources.size());
    for (size_t i = 0; i < turn.sources.size(); ++i) {
        EXPECT_TRUE(turn.sources[i].kept);
        EXPECT_EQ(turn.sources[i].chunk_id, a.sources[i].chunk_id);
    }
    EXPECT_EQ(turn.user_message, rag::build_user_message("安装", turn.sources));
}

TEST(Rag, PromptUsesChatchatTemplates) {
    kb::SearchHit h1, h2;
    h1.text = "甲";
    h2.text = "乙";
    std::string p = rag::build_user_message("问?", {h1, h2});
    EXPECT_NE(p.find("【已知信息】[1] 甲\n\n[2] 乙\n\n【问题】问?"), std::string::npos) << p;
    EXPECT_EQ(rag::build_user_message("问?", {}), "请你回答我的问题:\n问?");
}

TEST(Rag, FormatReferenceIsChatchats) {
    kb::SearchHit h1, h2, dropped;
    h1.file_name = "a b(1)!*'~_.-中.md";
    h1.text = "甲";
    h2.file_name = "install.md";
    h2.text = "乙";
    dropped.kept = false;
    const std::vector<kb::SearchHit> hits{h1, dropped, h2};
    // kb_chat (Chatchat's format_reference); the query is what Python's
    // urllib.parse.urlencode({"knowledge_base_name": "kb 1", "file_name": h1.file_name}) gives.
    auto linked = rag::format_reference(hits, rag::ReferenceLink{"http://h:7861/ ", "kb 1"}, true);
    ASSERT_EQ(linked.size(), 2u);
    EXPECT_EQ(linked[0], "出处 [1] [" + h1.file_name + "](http://h:7861/knowledge_base/download_doc?knowledge_base_name=kb+1"
                         "&file_name=a+b%281%29%21%2A%27~_.-%E4%B8%AD.md) \n\n甲\n\n");
    EXPECT_EQ(linked[1].rfind("出处 [2] [install.md](http://h:7861/knowledge_base/download_doc?", 0), 0u);
    // file_chat: no link.
    EXPECT_EQ(rag::format_reference(hits, std::nullopt, true)[1], "出处 [2] [install.md] \n\n乙\n\n");
    // The terminal: heads only, one per line; Chatchat's notice when nothing was found.
    EXPECT_EQ(rag::reference_text(hits, false), "出处 [1] [" + h1.file_name + "]\n出处 [2] [install.md]\n");
    EXPECT_EQ(rag::reference_text({}, false), std::string(rag::kNoReference) + "\n");
}
