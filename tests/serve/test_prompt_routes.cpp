// The web page's KB-chat extras on the server side: prompt templates from
// <root>/prompt_settings.yaml (Chatchat's /server/get_prompt_template, pdsd's name list, the
// prompt_name of kb_chat / its OpenAI route / file chat), a file's chunks through search_docs
// (query "" + file_name, Chatchat's KB page), and a stopped stream's shown text kept as the answer.
#include "serve_fixture.h"

#include "pdsd/core/file_util.h"
#include "pdsd/rag/prompt_settings.h"

#include <chrono>

using namespace pdsd;
using namespace pdsd::serve_test;

namespace {

const char* kTemplates = R"(rag:
  default: |
    资料：{{context}}
    问题：{{question}}
  empty: "没有资料。{{question}}"
  concise: "简短：{{context}}|{{question}}"
)";

void add_kb(httplib::Client& c) {
    ASSERT_EQ(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb1"}})->status, 200);
    std::string long_text = "# 安装\n\n";
    for (int i = 0; i < 12; ++i) long_text += "第" + std::to_string(i) + "步：运行 pdsd init 然后 pdsd kb -r，检查输出的每一行是否正确。\n\n";
    httplib::MultipartFormDataItems items = {{"files", long_text, "install.md", "text/markdown"},
                                             {"files", "退货政策：七天无理由退货。\n", "sub/returns.txt", "text/plain"},
                                             {"knowledge_base_name", "kb1", "", ""},
                                             {"chunk_size", "120", "", ""},
                                             {"chunk_overlap", "0", "", ""}};
    auto r = c.Post("/knowledge_base/upload_docs", items);
    ASSERT_EQ(r->status, 200) << r->body;
}

json messages_of(httplib::Client& c, const std::string& cid) {
    return body_json(c.Get(("/chat/conversations/messages?conversation_id=" + cid).c_str()))["data"];
}

}  // namespace

TEST(PromptRoutes, TemplatesComeFromTheRootsFile) {
    Running s;
    auto c = s.client();
    // No file: Chatchat's defaults, by Chatchat's route and pdsd's list.
    json list = body_json(c.Get("/pdsd/prompt_templates"));
    EXPECT_EQ(list["data"]["rag"], json({"default", "empty"}));
    EXPECT_EQ(list["data"]["llm_model"], json({"default", "with_history"}));
    EXPECT_TRUE(list["file"].is_null());
    auto r = post_json(c, "/server/get_prompt_template", {{"type", "rag"}, {"name", "default"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["data"], rag::PromptTemplates{}.with_context);
    r = c.Post("/server/get_prompt_template", "", "application/json");   // Chatchat's defaults: llm_model/default
    EXPECT_EQ(body_json(r)["data"], "{{input}}");

    // The file, read again when it changes (no restart).
    const std::string file = (fs::path(s.root.str()) / "prompt_settings.yaml").string();
    write_file_atomic(file, kTemplates);
    list = body_json(c.Get("/pdsd/prompt_templates"));
    EXPECT_EQ(list["data"]["rag"], json({"default", "empty", "concise"}));
    EXPECT_EQ(list["data"]["llm_model"], json({"default", "with_history"}));   // not in the file: the defaults
    EXPECT_EQ(list["file"], file);
    r = post_json(c, "/server/get_prompt_template", {{"type", "rag"}, {"name", "concise"}});
    EXPECT_EQ(body_json(r)["code"], 200);
    EXPECT_EQ(body_json(r)["data"], "简短：{{context}}|{{question}}");
    r = post_json(c, "/server/get_prompt_template", {{"type", "rag"}, {"name", "nope"}});
    expect_error_shape(r, 404);
    const std::string msg = body_json(r)["msg"];
    EXPECT_EQ(msg.rfind("Prompt template not found", 0), 0u) << msg;
    EXPECT_NE(msg.find("rag/concise"), std::string::npos) << msg;
    EXPECT_EQ(body_json(r)["error"]["param"], "name");

    // A broken file: 500 naming it and the line, until it is fixed.
    write_file_atomic(file, "rag:\n  default: [\n");
    r = c.Get("/pdsd/prompt_templates");
    expect_error_shape(r, 500);
    EXPECT_NE(r->body.find("prompt_settings.yaml"), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("line "), std::string::npos) << r->body;
    write_file_atomic(file, kTemplates);
    EXPECT_EQ(c.Get("/pdsd/prompt_templates")->status, 200);
}

TEST(PromptRoutes, PromptNamePicksTheTemplateTheModelIsGiven) {
    Running s;
    auto c = s.client();
    add_kb(c);
    write_file_atomic((fs::path(s.root.str()) / "prompt_settings.yaml").string(), kTemplates);
    // The chunk kb_chat keeps (same search fields as search_docs).
    json hits = body_json(post_json(c, "/knowledge_base/search_docs", {{"query", "退货政策"}, {"knowledge_base_name", "kb1"}, {"top_k", 1}}));
    ASSERT_EQ(hits.size(), 1u);
    const std::string chunk = hits[0]["page_content"];
    // Greedy answers equal the tiny model's for the filled template: the template reached the model.
    auto answer = [&](const std::string& path, json body) {
        auto r = post_json(c, path, body);
        EXPECT_EQ(r->status, 200) << r->body;
        json j = body_json(r);
        return std::make_pair(j["choices"][0]["message"]["content"].get<std::string>(), j.value("usage", json::object()));
    };
    json body{{"query", "退货政策"}, {"kb_name", "kb1"}, {"top_k", 1}, {"stream", false}, {"temperature", 0}, {"max_tokens", 6},
              {"prompt_name", "concise"}};
    Reference want = reference({{"user", "简短：[1] " + chunk + "|退货政策"}}, 6);
    auto [text, usage] = answer("/chat/kb_chat", body);
    EXPECT_EQ(text, want.text);
    EXPECT_EQ(usage["prompt_tokens"], want.prompt_tokens);
    // No chunk kept: rag.empty, whatever the name.
    body["query"] = "zzqqxx";
    want = reference({{"user", "没有资料。zzqqxx"}}, 6);
    EXPECT_EQ(answer("/chat/kb_chat", body).first, want.text);
    // No prompt_name: rag.default of the file.
    body.erase("prompt_name");
    body["query"] = "退货政策";
    want = reference({{"user", "资料：[1] " + chunk + "\n问题：退货政策\n"}}, 6);
    EXPECT_EQ(answer("/chat/kb_chat", body).first, want.text);
    // Chatchat's OpenAI-shaped route carries it in extra_body.
    json oa{{"messages", {{{"role", "user"}, {"content", "退货政策"}}}}, {"top_k", 1}, {"temperature", 0}, {"max_tokens", 6},
            {"prompt_name", "concise"}};
    want = reference({{"user", "简短：[1] " + chunk + "|退货政策"}}, 6);
    EXPECT_EQ(answer("/knowledge_base/local_kb/kb1/chat/completions", oa).first, want.text);

    // An unknown name: 400 naming the field, the known names and the file, on every RAG route.
    body["prompt_name"] = "longer";
    auto r = post_json(c, "/chat/kb_chat", body);
    expect_error_shape(r, 400);
    EXPECT_EQ(body_json(r)["error"]["param"], "prompt_name");
    const std::string msg = body_json(r)["error"]["message"];
    EXPECT_NE(msg.find("default, empty, concise"), std::string::npos) << msg;
    EXPECT_NE(msg.find("prompt_settings.yaml"), std::string::npos) << msg;
    oa["prompt_name"] = "longer";
    expect_error_shape(post_json(c, "/knowledge_base/local_kb/kb1/chat/completions", oa), 400);
    httplib::MultipartFormDataItems items = {{"files", "退货政策：七天无理由退货。\n", "r.txt", "text/plain"}};
    auto up = c.Post("/knowledge_base/upload_temp_docs", items);
    ASSERT_EQ(up->status, 200) << up->body;
    const std::string id = body_json(up)["data"]["id"];
    json fc{{"query", "退货政策"}, {"knowledge_id", id}, {"top_k", 1}, {"stream", false}, {"temperature", 0}, {"max_tokens", 6},
            {"prompt_name", "longer"}};
    expect_error_shape(post_json(c, "/chat/file_chat", fc), 400);
    // File chat fills the named one too (its answer frame: {"answer", "docs"}).
    fc["prompt_name"] = "concise";
    r = post_json(c, "/chat/file_chat", fc);
    ASSERT_EQ(r->status, 200) << r->body;
    auto frames = sse_data(r->body);
    ASSERT_EQ(frames.size(), 1u) << r->body;
    // Its chunk, as retrieval alone gives it: "出处 [1] [r.txt] \n\n<chunk>\n\n".
    r = post_json(c, "/chat/kb_chat", {{"query", "退货政策"}, {"mode", "temp_kb"}, {"kb_name", id}, {"top_k", 1}, {"stream", false},
                                       {"return_direct", true}});
    const std::string doc = body_json(r)["docs"].at(0);
    const size_t at = doc.find(" \n\n") + 3;
    want = reference({{"user", "简短：[1] " + doc.substr(at, doc.size() - at - 2) + "|退货政策"}}, 6);
    EXPECT_EQ(json::parse(frames[0])["answer"], want.text);
}

TEST(PromptRoutes, SearchDocsWithAFileNameListsItsChunks) {
    Running s;
    auto c = s.client();
    add_kb(c);
    json files = body_json(c.Get("/knowledge_base/list_files?knowledge_base_name=kb1"))["data"];
    ASSERT_EQ(files[0]["file_name"], "install.md");
    const int64_t count = files[0]["docs_count"];
    ASSERT_GT(count, 2) << "the test needs a file of several chunks";
    auto docs = [&](json body) {
        body["knowledge_base_name"] = "kb1";
        auto r = post_json(c, "/knowledge_base/search_docs", body);
        EXPECT_EQ(r->status, 200) << r->body;
        return body_json(r);
    };
    json d = docs({{"query", ""}, {"file_name", "install.md"}});
    ASSERT_EQ(static_cast<int64_t>(d.size()), count);
    std::string joined;
    for (int64_t i = 0; i < count; ++i) {
        EXPECT_EQ(d[i]["metadata"]["source"], "install.md");
        EXPECT_EQ(d[i]["metadata"]["chunk_index"], i);   // in the file's order
        EXPECT_EQ(d[i]["type"], "Document");
        EXPECT_EQ(d[i]["score"], 3.0);                   // DocumentWithVSId's default
        EXPECT_FALSE(d[i]["id"].get<std::string>().empty());
        joined += d[i]["page_content"].get<std::string>();
    }
    for (int i = 0; i < 12; ++i) EXPECT_NE(joined.find("第" + std::to_string(i) + "步"), std::string::npos) << i;
    // Chatchat's SQL LIKE patterns and metadata filter; nothing to list without either.
    json txt = docs({{"file_name", "%.TXT"}});
    ASSERT_EQ(txt.size(), 1u);
    EXPECT_EQ(txt[0]["metadata"]["source"], "sub/returns.txt");
    EXPECT_EQ(docs({{"metadata", {{"source", "install.md"}}}}), d);
    EXPECT_EQ(docs({{"metadata", {{"source", "install.md"}, {"chunk_index", 1}}}}), json::array({d[1]}));
    EXPECT_TRUE(docs({{"query", ""}}).empty());
    EXPECT_TRUE(docs({{"file_name", "missing.md"}}).empty());
    // A query still searches.
    EXPECT_EQ(docs({{"query", "退货"}, {"file_name", "install.md"}, {"top_k", 1}})[0]["metadata"]["source"], "sub/returns.txt");
    expect_error_shape(post_json(c, "/knowledge_base/search_docs", {{"knowledge_base_name", "kb9"}, {"file_name", "a.md"}}), 404);
    expect_error_shape(post_json(c, "/knowledge_base/search_docs", {{"knowledge_base_name", "kb1"}, {"metadata", "a"}}), 400);
}

TEST(PromptRoutes, AStoppedStreamKeepsTheShownText) {
    Running s;
    auto c = s.client();
    const std::string cid = body_json(post_json(c, "/chat/conversations/create", {{"name", "stop"}, {"chat_type", "llm_chat"}}))["data"]["id"];
    json body = chat_body("写一首很长的诗", 400, /*stream=*/true);
    body["conversation_id"] = cid;
    httplib::Client h("127.0.0.1", s.port);
    httplib::Request req;
    req.method = "POST";
    req.path = "/chat/chat/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    std::string raw;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        raw.append(data, n);
        return sse_data(raw).size() < 12;   // then hang up, as the page's stop button does
    };
    h.send(req);
    std::string received;
    for (auto& d : sse_data(raw)) {
        json f = json::parse(d, nullptr, false);
        if (f.is_object() && f["choices"][0]["delta"].contains("content")) received += f["choices"][0]["delta"]["content"].get<std::string>();
    }
    ASSERT_FALSE(received.empty());
    // The server notices at its next write; the row then holds the pieces it had sent.
    std::string stored;
    for (int i = 0; i < 500 && stored.empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        stored = messages_of(c, cid)[0]["response"];
    }
    const std::string full = reference({{"user", "写一首很长的诗"}}, 400).text;
    EXPECT_EQ(stored.rfind(received, 0), 0u) << "stored " << stored.size() << " bytes, received " << received.size();
    EXPECT_EQ(full.rfind(stored, 0), 0u) << "the stored text is the answer's beginning";
    EXPECT_LT(stored.size(), full.size()) << "stopped, not finished";
}
