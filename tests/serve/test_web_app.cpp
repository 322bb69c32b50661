// The web page's server side: ConversationStore (Chatchat's conversation/message tables in
// <root>/knowledge_base/conversations.db) and its routes, turns recorded by the chat routes,
// Chatchat's /chat/feedback, the vendored files.
#include "serve_fixture.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/serve/conversations.h"

#include <sqlite3.h>

using namespace pdsd;
using namespace pdsd::serve_test;
using serve::ConversationStore;

namespace {

// Column names of `table` in the SQLite file `path`, in order.
std::vector<std::string> columns(const std::string& path, const std::string& table) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::vector<std::string> out;
    if (sqlite3_prepare_v2(db, ("PRAGMA table_info(" + table + ")").c_str(), -1, &st, nullptr) == SQLITE_OK)
        while (sqlite3_step(st) == SQLITE_ROW) out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

json create_conversation(httplib::Client& c, const std::string& name, const std::string& type = "llm_chat") {
    auto r = post_json(c, "/chat/conversations/create", {{"name", name}, {"chat_type", type}});
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    return body_json(r)["data"];
}

json messages_of(httplib::Client& c, const std::string& cid) {
    auto r = c.Get(("/chat/conversations/messages?conversation_id=" + cid).c_str());
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    return body_json(r)["data"];
}

}  // namespace

TEST(ConversationStore, TablesAreChatchatsInKnowledgeBaseFolder) {
    test::TempDir root;
    ConversationStore s(root.str());
    EXPECT_EQ(s.path(), root.str() + "/knowledge_base/conversations.db");
    EXPECT_EQ(columns(s.path(), "conversation"), (std::vector<std::string>{"id", "name", "chat_type", "create_time"}));
    EXPECT_EQ(columns(s.path(), "message"),
              (std::vector<std::string>{"id", "conversation_id", "chat_type", "query", "response", "meta_data", "feedback_score",
                                        "feedback_reason", "create_time"}));
}

TEST(ConversationStore, TurnsFeedbackAndRenameSurviveReopen) {
    test::TempDir root;
    std::string cid, m1;
    {
        ConversationStore s(root.str());
        auto c = s.create("第一个对话", "kb_chat");
        EXPECT_EQ(c.id.size(), 32u);
        EXPECT_EQ(c.id.find_first_not_of("0123456789abcdef"), std::string::npos);
        EXPECT_EQ(c.create_time.size(), 19u) << c.create_time;   // YYYY-MM-DD HH:MM:SS
        cid = c.id;
        auto m = s.add_message(cid, "kb_chat", "如何安装？", {{"docs", {"出处 [1] a.md"}}});
        EXPECT_EQ(m.feedback_score, -1);   // Chatchat's "not rated"
        EXPECT_EQ(m.response, "");
        m1 = m.id;
        s.set_response(m1, "运行 pdsd init。");
        s.add_message(cid, "kb_chat", "第二问", {});
        s.feedback(m1, 0, "答非所问");
        s.rename(cid, "安装问题");
        s.create("较新的对话", "llm_chat");
    }
    ConversationStore s(root.str());
    auto list = s.list();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].name, "较新的对话");   // newest first
    EXPECT_EQ(list[1].name, "安装问题");
    auto ms = s.messages(cid);
    ASSERT_EQ(ms.size(), 2u);
    EXPECT_EQ(ms[0].id, m1);                 // insertion order
    EXPECT_EQ(ms[0].query, "如何安装？");
    EXPECT_EQ(ms[0].response, "运行 pdsd init。");
    EXPECT_EQ(ms[0].feedback_score, 0);
    EXPECT_EQ(ms[0].feedback_reason, "答非所问");
    EXPECT_EQ(ms[0].meta_data["docs"][0], "出处 [1] a.md");
    EXPECT_EQ(ms[1].query, "第二问");

    std::string md = s.export_markdown(cid);
    EXPECT_EQ(md.rfind("# 安装问题\n", 0), 0u) << md;
    for (const char* part : {"如何安装？", "运行 pdsd init。", "出处 [1] a.md", "feedback: 0/100 — 答非所问", "第二问"})
        EXPECT_NE(md.find(part), std::string::npos) << part << "\n" << md;
    EXPECT_LT(md.find("如何安装？"), md.find("第二问"));

    // Regenerate the first turn: it and everything after it go.
    EXPECT_EQ(s.truncate_from(cid, m1), 2u);
    EXPECT_TRUE(s.messages(cid).empty());
    s.remove(cid);
    EXPECT_FALSE(s.get(cid));
    EXPECT_EQ(s.list().size(), 1u);
}

TEST(ConversationStore, BadInputNamesTheField) {
    test::TempDir root;
    ConversationStore s(root.str());
    auto c = s.create("x", "llm_chat");
    auto m = s.add_message(c.id, "llm_chat", "q", {});
    auto expect_usage = [](auto fn, const std::string& field) {
        try {
            fn();
            ADD_FAILURE() << "no error for " << field;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
        }
    };
    std::string name50;
    for (int i = 0; i < 50; ++i) name50 += "名";   // 50 characters, 150 bytes: allowed
    EXPECT_NO_THROW(s.rename(c.id, name50));
    expect_usage([&] { s.rename(c.id, name50 + "字"); }, "name");
    expect_usage([&] { s.create("", "llm_chat"); }, "name");
    expect_usage([&] { s.feedback(m.id, 101, ""); }, "score");
    expect_usage([&] { s.feedback(m.id, -1, ""); }, "score");
    expect_usage([&] { s.feedback(m.id, 50, std::string(256, 'r')); }, "reason");
    EXPECT_THROW(s.add_message("0123456789abcdef0123456789abcdef", "llm_chat", "q", {}), IoError);
    expect_usage([&] { s.adopt(std::string(33, 'a'), "n", "llm_chat"); }, "conversation_id");
    expect_usage([&] { s.adopt("a;b", "n", "llm_chat"); }, "conversation_id");
    EXPECT_EQ(s.adopt(c.id, "other name", "kb_chat").name, name50);   // a known id is kept as it is
    EXPECT_EQ(s.list().size(), 1u);
    EXPECT_THROW(s.feedback("nope", 100, ""), IoError);
    EXPECT_THROW(s.rename("nope", "y"), IoError);
    EXPECT_THROW(s.remove("nope"), IoError);
    EXPECT_THROW(s.export_markdown("nope"), IoError);
    EXPECT_THROW(s.truncate_from(c.id, "nope"), IoError);
    EXPECT_EQ(s.messages(c.id).size(), 1u);   // nothing changed by the refusals
    EXPECT_EQ(s.message(m.id)->feedback_score, -1);
}

TEST(WebApp, ConversationRoutesRoundTrip) {
    Running s({}, /*with_model=*/false);
    auto c = s.client();
    // No file before the page uses it.
    EXPECT_FALSE(fs::exists(s.root.str() + "/knowledge_base/conversations.db"));
    auto list = body_json(c.Get("/chat/conversations"));
    EXPECT_EQ(list["code"], 200);
    EXPECT_TRUE(list["data"].empty());
    json conv = create_conversation(c, "周报", "kb_chat");
    EXPECT_EQ(conv["chat_type"], "kb_chat");
    EXPECT_TRUE(fs::exists(s.root.str() + "/knowledge_base/conversations.db"));
    const std::string cid = conv["id"];

    auto r = post_json(c, "/chat/conversations/rename", {{"conversation_id", cid}, {"name", "周报 (改)"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["data"]["name"], "周报 (改)");
    list = body_json(c.Get("/chat/conversations"));
    ASSERT_EQ(list["data"].size(), 1u);
    EXPECT_EQ(list["data"][0]["name"], "周报 (改)");
    EXPECT_TRUE(messages_of(c, cid).empty());

    r = c.Get(("/chat/conversations/export?conversation_id=" + cid).c_str());
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/markdown; charset=utf-8");
    EXPECT_EQ(r->get_header_value("Content-Disposition"), "attachment; filename=\"周报 (改).md\"");
    EXPECT_EQ(r->body.rfind("# 周报 (改)\n", 0), 0u) << r->body;

    // Bad requests: 4xx naming the field, the server keeps serving.
    expect_error_shape(post_json(c, "/chat/conversations/rename", {{"conversation_id", cid}}), 400);
    expect_error_shape(post_json(c, "/chat/conversations/rename", {{"conversation_id", cid}, {"name", std::string(51, 'n')}}), 400);
    expect_error_shape(post_json(c, "/chat/conversations/create", {{"name", 5}}), 400);
    expect_error_shape(c.Post("/chat/conversations/create", "not json", "application/json"), 400);
    expect_error_shape(c.Get("/chat/conversations/messages"), 400);
    expect_error_shape(c.Get("/chat/conversations/messages?conversation_id=nope"), 404);
    expect_error_shape(post_json(c, "/chat/feedback", {{"message_id", "nope"}, {"score", 100}}), 404);

    r = post_json(c, "/chat/conversations/delete", {{"conversation_id", cid}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_TRUE(body_json(c.Get("/chat/conversations"))["data"].empty());
    expect_error_shape(post_json(c, "/chat/conversations/delete", {{"conversation_id", cid}}), 404);
    expect_alive(s);
}

TEST(WebApp, ChatRoutesRecordTheTurnOfANamedConversation) {
    Running s;
    auto c = s.client();
    const std::string cid = create_conversation(c, "llm")["id"];

    // Non-streaming, Chatchat's route: the answer carries the message id of the stored row.
    json body = chat_body("你好", 6);
    body["conversation_id"] = cid;
    auto r = post_json(c, "/chat/chat/completions", body);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = body_json(r);
    json rows = messages_of(c, cid);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(j["message_id"], rows[0]["id"]);
    EXPECT_EQ(rows[0]["chat_type"], "llm_chat");
    EXPECT_EQ(rows[0]["query"], "你好");
    EXPECT_EQ(rows[0]["response"], j["choices"][0]["message"]["content"]);
    EXPECT_EQ(rows[0]["response"], reference({{"user", "你好"}}, 6).text);

    // Streaming: every chunk names the row, and the row holds the concatenated deltas.
    body = chat_body("第二个问题", 5, /*stream=*/true);
    body["conversation_id"] = cid;
    r = post_json(c, "/chat/chat/completions", body);
    ASSERT_EQ(r->status, 200) << r->body;
    std::string streamed, message_id;
    for (auto& d : sse_data(r->body)) {
        if (d == "[DONE]") continue;
        json f = json::parse(d);
        message_id = f["message_id"];
        if (auto& delta = f["choices"][0]["delta"]; delta.contains("content")) streamed += delta["content"].get<std::string>();
    }
    rows = messages_of(c, cid);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[1]["id"], message_id);
    EXPECT_EQ(rows[1]["response"], streamed);

    // No conversation_id: nothing stored. An id that cannot be one: 400 before generating.
    const size_t before = body_json(c.Get("/chat/conversations"))["data"].size();
    ASSERT_EQ(post_json(c, "/v1/chat/completions", chat_body("x", 2))->status, 200);
    body = chat_body("x", 2);
    body["conversation_id"] = std::string(33, 'a');
    expect_error_shape(post_json(c, "/chat/chat/completions", body), 400);
    body["conversation_id"] = "a b";
    expect_error_shape(post_json(c, "/chat/chat/completions", body), 400);
    EXPECT_EQ(messages_of(c, cid).size(), 2u);
    EXPECT_EQ(body_json(c.Get("/chat/conversations"))["data"].size(), before);

    // An id the server has not seen (Chatchat's Streamlit page makes its own uuid hex ids and
    // never creates them): the turn is stored under a conversation adopted with that id, named
    // after the first query.
    const std::string own = "feedfacefeedfacefeedfacefeedface";
    body = chat_body("第一行\n第二行，一个相当长的问题，超过二十个字的部分不进名字", 2);
    body["conversation_id"] = own;
    ASSERT_EQ(post_json(c, "/chat/chat/completions", body)->status, 200);
    body = chat_body("接着问", 2);
    body["conversation_id"] = own;
    ASSERT_EQ(post_json(c, "/chat/chat/completions", body)->status, 200);
    json adopted = body_json(c.Get("/chat/conversations"))["data"][0];   // newest first
    EXPECT_EQ(adopted["id"], own);
    EXPECT_EQ(adopted["name"], "第一行 第二行，一个相当长的问题，超过二");   // 20 characters, one line
    EXPECT_EQ(adopted["chat_type"], "llm_chat");
    ASSERT_EQ(messages_of(c, own).size(), 2u);
    EXPECT_EQ(messages_of(c, own)[1]["query"], "接着问");

    // Feedback (Chatchat's body) lands in the row; bad scores are 400s.
    r = post_json(c, "/chat/feedback", {{"message_id", message_id}, {"score", 0}, {"reason", "太短"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["code"], 200);
    rows = messages_of(c, cid);
    EXPECT_EQ(rows[1]["feedback_score"], 0);
    EXPECT_EQ(rows[1]["feedback_reason"], "太短");
    EXPECT_EQ(rows[0]["feedback_score"], -1);
    expect_error_shape(post_json(c, "/chat/feedback", {{"message_id", message_id}, {"score", 101}}), 400);
    expect_error_shape(post_json(c, "/chat/feedback", {{"message_id", message_id}, {"score", "good"}}), 400);
    expect_error_shape(post_json(c, "/chat/feedback", {{"score", 100}}), 400);

    // Regenerate: truncate from the second turn, ask again.
    r = post_json(c, "/chat/conversations/truncate", {{"conversation_id", cid}, {"message_id", message_id}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["data"]["deleted"], 1);
    EXPECT_EQ(messages_of(c, cid).size(), 1u);
}

TEST(WebApp, KbChatStoresItsSources) {
    Running s;
    auto c = s.client();
    ASSERT_EQ(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb1"}})->status, 200);
    httplib::MultipartFormDataItems items = {{"files", "# 安装\n\n运行 pdsd init 然后 pdsd kb -r 即可完成安装。\n", "install.md", "text/markdown"},
                                             {"knowledge_base_name", "kb1", "", ""}};
    ASSERT_EQ(c.Post("/knowledge_base/upload_docs", items)->status, 200);
    const std::string cid = create_conversation(c, "kb", "kb_chat")["id"];

    auto r = post_json(c, "/chat/kb_chat", {{"query", "如何安装"}, {"kb_name", "kb1"}, {"stream", true}, {"max_tokens", 4},
                                            {"temperature", 0}, {"conversation_id", cid}});
    ASSERT_EQ(r->status, 200) << r->body;
    auto frames = sse_data(r->body);
    ASSERT_FALSE(frames.empty());
    json first = json::parse(frames[0]);
    ASSERT_TRUE(first.contains("docs")) << frames[0];
    std::string answer;
    for (auto& d : frames) {
        if (d == "[DONE]") continue;
        json f = json::parse(d);
        if (auto& ch = f["choices"]; ch.is_array() && ch[0].contains("delta")) answer += ch[0]["delta"]["content"].get<std::string>();
    }
    json rows = messages_of(c, cid);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(first["message_id"], rows[0]["id"]);
    EXPECT_EQ(rows[0]["chat_type"], "kb_chat");
    EXPECT_EQ(rows[0]["meta_data"]["kb_name"], "kb1");
    EXPECT_EQ(rows[0]["meta_data"]["docs"], first["docs"]);
    EXPECT_NE(rows[0]["meta_data"]["docs"][0].get<std::string>().find("install.md"), std::string::npos);
    EXPECT_EQ(rows[0]["response"], answer);

    // Retrieval only (return_direct): the sources are stored, the answer is empty.
    r = post_json(c, "/chat/kb_chat", {{"query", "如何安装"}, {"kb_name", "kb1"}, {"stream", false}, {"return_direct", true},
                                       {"conversation_id", cid}});
    ASSERT_EQ(r->status, 200) << r->body;
    rows = messages_of(c, cid);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[1]["response"], "");
    EXPECT_EQ(rows[1]["meta_data"]["docs"], body_json(r)["docs"]);
    std::string md = c.Get(("/chat/conversations/export?conversation_id=" + cid).c_str())->body;
    EXPECT_NE(md.find("install.md"), std::string::npos) << md;
}

TEST(WebApp, VendoredFilesAreEmbeddedAndNeedNoKey) {
    serve::ServeOptions o;
    o.api_key = "k";
    Running s(o, /*with_model=*/false);
    auto anon = s.client();
    for (const char* f : {"marked.min.js", "purify.min.js", "highlight.min.js", "highlight-github.css"}) {
        auto r = anon.Get((std::string("/vendor/") + f).c_str());
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200) << f;
        EXPECT_EQ(r->body, read_file(test::source_dir() + "/share/web/vendor/" + f)) << f;
    }
    EXPECT_EQ(anon.Get("/vendor/marked.min.js")->get_header_value("Content-Type"), "application/javascript; charset=utf-8");
    // The conversations are not public.
    expect_error_shape(anon.Get("/chat/conversations"), 401);
    expect_error_shape(anon.Get("/vendor/../chat/conversations"), 401);
    EXPECT_EQ(s.client("k").Get("/chat/conversations")->status, 200);
}
