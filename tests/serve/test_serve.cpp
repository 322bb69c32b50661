// pdsd serve over real HTTP (httplib::Client) on an ephemeral port, with a tiny random-weight
// Qwen2 and the real Qwen tokenizer: OpenAI routes (usage counts, stream frame order, stop,
// max_tokens, 429, 401), error handling (malformed JSON, wrong types, oversize bodies — and the
// server keeps serving), the Chatchat knowledge-base routes with traversal attempts, kb_chat,
// embeddings, metrics, the web page, and client disconnects.
#include "serve_fixture.h"
#include "test_util.h"

#include "pdsd/core/file_util.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/tools.h"
#include "pdsd/serve/server.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace pdsd;
using json = nlohmann::json;
namespace fs = std::filesystem;

using namespace pdsd::serve_test;

TEST(Serve, ModelsListsTheModelAndEmbedder) {
    Running s;
    auto c = s.client();
    auto r = c.Get("/v1/models");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    json j = body_json(r);
    EXPECT_EQ(j["object"], "list");
    ASSERT_EQ(j["data"].size(), 2u);
    EXPECT_EQ(j["data"][0]["id"], fs::path(TinyModel::get().dir).filename().string());
    EXPECT_EQ(j["data"][0]["object"], "model");
    EXPECT_EQ(j["data"][1]["id"], "hash-ngram");
}

TEST(Serve, ChatNonStreamMatchesGeneratorAndUsageIsExact) {
    Running s;
    auto c = s.client();
    Reference ref = reference({{"user", "你好，介绍一下你自己"}}, 12);
    auto r = post_json(c, "/v1/chat/completions", chat_body("你好，介绍一下你自己", 12));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = body_json(r);
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
    EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text);
    EXPECT_EQ(j["choices"][0]["finish_reason"], ref.tokens.size() == 12 ? "length" : "stop");
    EXPECT_EQ(j["usage"]["prompt_tokens"], ref.prompt_tokens);
    EXPECT_EQ(j["usage"]["completion_tokens"], static_cast<int64_t>(ref.tokens.size()));
    EXPECT_EQ(j["usage"]["total_tokens"], ref.prompt_tokens + static_cast<int64_t>(ref.tokens.size()));
}

TEST(Serve, StreamFrameOrderRoleDeltasFinishDone) {
    Running s;
    auto c = s.client();
    Reference ref = reference({{"user", "写一首诗"}}, 10);
    auto r = post_json(c, "/v1/chat/completions", chat_body("写一首诗", 10, true));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    auto frames = sse_data(r->body);
    ASSERT_GE(frames.size(), 3u);
    EXPECT_EQ(frames.back(), "[DONE]");
    json first = json::parse(frames[0]);
    EXPECT_EQ(first["object"], "chat.completion.chunk");
    EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
    EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
    json fin = json::parse(frames[frames.size() - 2]);
    EXPECT_TRUE(fin["choices"][0]["delta"].empty());
    EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
    std::string text;
    for (size_t i = 1; i + 2 < frames.size(); ++i) {
        json f = json::parse(frames[i]);
        EXPECT_EQ(f["id"], first["id"]);
        EXPECT_TRUE(f["choices"][0]["finish_reason"].is_null());
        EXPECT_FALSE(f["choices"][0]["delta"].contains("role"));
        text += f["choices"][0]["delta"]["content"].get<std::string>();
    }
    EXPECT_EQ(text, ref.text);
}

TEST(Serve, StreamIncludeUsage) {
    Running s;
    auto c = s.client();
    json b = chat_body("hello", 5, true);
    b["stream_options"] = {{"include_usage", true}};
    auto r = post_json(c, "/v1/chat/completions", b);
    ASSERT_TRUE(r);
    auto frames = sse_data(r->body);
    ASSERT_GE(frames.size(), 3u);
    json u = json::parse(frames[frames.size() - 2]);
    EXPECT_TRUE(u["choices"].empty());
    EXPECT_EQ(u["usage"]["completion_tokens"], 5);
}

TEST(Serve, StopStringCutsAnswer) {
    Running s;
    auto c = s.client();
    Reference ref = reference({{"user", "count"}}, 16);
    auto& tok = *TinyModel::get().tok;
    // Stop at the text of the 4th generated token (a string that certainly occurs).
    std::string stop;
    for (size_t i = 3; i < ref.tokens.size() && stop.empty(); ++i) {
        std::string piece = tok.decode({static_cast<tokenizer::TokenId>(ref.tokens[i])}, true);
        if (tokenizer::complete_utf8_prefix(piece) == piece.size() && !piece.empty() && ref.text.find(piece) != std::string::npos) stop = piece;
    }
    ASSERT_FALSE(stop.empty());
    json b = chat_body("count", 16);
    b["stop"] = {stop};
    auto r = post_json(c, "/v1/chat/completions", b);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = body_json(r);
    EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text.substr(0, ref.text.find(stop)));
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_LT(j["usage"]["completion_tokens"].get<int64_t>(), 16);
    // Stream: same text, finish_reason stop.
    b["stream"] = true;
    r = post_json(c, "/v1/chat/completions", b);
    auto frames = sse_data(r->body);
    std::string text;
    for (size_t i = 1; i + 2 < frames.size(); ++i) text += json::parse(frames[i])["choices"][0]["delta"]["content"].get<std::string>();
    EXPECT_EQ(text, ref.text.substr(0, ref.text.find(stop)));
    EXPECT_EQ(json::parse(frames[frames.size() - 2])["choices"][0]["finish_reason"], "stop");
}

TEST(Serve, MaxTokensGivesFinishReasonLength) {
    Running s;
    auto c = s.client();
    auto r = post_json(c, "/v1/chat/completions", chat_body("hi", 3));
    ASSERT_TRUE(r);
    json j = body_json(r);
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(j["usage"]["completion_tokens"], 3);
}

TEST(Serve, SeededSamplingIsReproducible) {
    Running s;
    auto c = s.client();
    json b = chat_body("hi", 8);
    b["temperature"] = 1.0;
    b["top_p"] = 0.9;
    b["seed"] = 1234;
    auto a = body_json(post_json(c, "/v1/chat/completions", b));
    auto a2 = body_json(post_json(c, "/v1/chat/completions", b));
    EXPECT_EQ(a["choices"][0]["message"]["content"], a2["choices"][0]["message"]["content"]);
}

TEST(Serve, QueueFullAnswers429WithRetryAfter) {
    serve::ServeOptions o;
    o.queue_size = 1;
    Running s(o);
    s.server->pause_worker(true);
    std::atomic<int> first_status{0};
    std::thread t([&] {
        auto c = s.client();
        auto r = post_json(c, "/v1/chat/completions", chat_body("first", 2));
        first_status = r ? r->status : -1;
    });
    // Wait until the first request sits in the queue (generous: the test machine may be loaded).
    bool queued = false;
    for (int i = 0; i < 1000 && !queued; ++i) {
        queued = body_json(s.client().Get("/health"))["queue_depth"] == 1;
        if (!queued) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!queued) {
        s.server->pause_worker(false);
        t.join();
        FAIL() << "the first request never reached the queue";
    }
    auto c = s.client();
    auto r = post_json(c, "/v1/chat/completions", chat_body("second", 2));
    expect_error_shape(r, 429);
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
    EXPECT_EQ(body_json(r)["error"]["type"], "rate_limit_error");
    s.server->pause_worker(false);
    t.join();
    EXPECT_EQ(first_status.load(), 200);
    // Room again.
    r = post_json(c, "/v1/chat/completions", chat_body("third", 2));
    EXPECT_EQ(r->status, 200);
}

TEST(Serve, ApiKeyRequiredExceptHealth) {
    serve::ServeOptions o;
    o.api_key = "sekret";
    Running s(o);
    auto anon = s.client();
    expect_error_shape(anon.Get("/v1/models"), 401);
    expect_error_shape(post_json(anon, "/v1/chat/completions", chat_body("x", 1)), 401);
    expect_error_shape(anon.Get("/knowledge_base/list_knowledge_bases"), 401);
    expect_error_shape(anon.Get("/metrics"), 401);
    auto wrong = s.client("sekreT");
    expect_error_shape(wrong.Get("/v1/models"), 401);
    EXPECT_EQ(body_json(wrong.Get("/v1/models"))["error"]["type"], "authentication_error");
    auto ok = s.client("sekret");
    EXPECT_EQ(ok.Get("/v1/models")->status, 200);
    EXPECT_EQ(anon.Get("/health")->status, 200);
}

TEST(Serve, BadRequestsAre4xxAndServerKeepsServing) {
    serve::ServeOptions o;
    o.max_json_bytes = 4096;
    o.max_upload_bytes = 64 * 1024;
    Running s(o);
    auto c = s.client();
    // Malformed JSON.
    for (std::string body : {"{", "not json", "", "[1,2", "{\"messages\": [}", "\xff\xfe"}) {
        expect_error_shape(c.Post("/v1/chat/completions", body, "application/json"), 400);
        expect_alive(s);
    }
    // Wrong types / values.
    std::vector<json> bad = {
        json::array(),
        {{"messages", "hi"}},
        {{"messages", json::array()}},
        {{"messages", {{{"role", "user"}, {"content", 5}}}}},
        {{"messages", {{{"role", "wizard"}, {"content", "x"}}}}},
        {{"messages", {1}}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"temperature", "hot"}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"temperature", 5}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 1.5}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", -1}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stop", 3}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stop", {1}}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stream", "yes"}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"seed", "x"}},
        {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"n", 2}},
    };
    for (auto& b : bad) {
        expect_error_shape(post_json(c, "/v1/chat/completions", b), 400);
        expect_alive(s);
    }
    expect_error_shape(post_json(c, "/v1/embeddings", {{"input", 5}}), 400);
    expect_error_shape(post_json(c, "/knowledge_base/search_docs", {{"knowledge_base_name", 5}}), 400);
    expect_error_shape(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", json::array()}}), 400);
    // Oversize bodies: JSON over its limit, anything over the global limit.
    std::string big_json = json{{"messages", {{{"role", "user"}, {"content", std::string(8000, 'a')}}}}}.dump();
    expect_error_shape(c.Post("/v1/chat/completions", big_json, "application/json"), 413);
    expect_alive(s);
    httplib::MultipartFormDataItems items = {{"files", std::string(100 * 1024, 'x'), "big.txt", "text/plain"},
                                             {"knowledge_base_name", "kb", "", ""}};
    auto r = c.Post("/knowledge_base/upload_docs", items);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    expect_alive(s);
    // Unknown route: 404 in the same shape.
    expect_error_shape(c.Get("/v1/nope"), 404);
    expect_alive(s);
}

TEST(Serve, KnowledgeBaseRoundTrip) {
    Running s;
    auto c = s.client();
    auto r = post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb1"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["code"], 200);
    // Creating it again: Chatchat's "exists" answer.
    r = post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb1"}});
    EXPECT_EQ(r->status, 409);
    auto kbs = body_json(c.Get("/knowledge_base/list_knowledge_bases"));
    ASSERT_EQ(kbs["code"], 200);
    ASSERT_EQ(kbs["data"].size(), 1u);
    EXPECT_EQ(kbs["data"][0]["kb_name"], "kb1");

    httplib::MultipartFormDataItems items = {
        {"files", "# 安装\n\n运行 pdsd init 然后 pdsd kb -r 即可完成安装。\n", "install.md", "text/markdown"},
        {"files", "退货政策：七天无理由退货。\n", "sub/returns.txt", "text/plain"},
        {"knowledge_base_name", "kb1", "", ""},
        {"override", "false", "", ""}};
    r = c.Post("/knowledge_base/upload_docs", items);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_TRUE(body_json(r)["data"]["failed_files"].empty()) << r->body;

    auto files = body_json(c.Get("/knowledge_base/list_files?knowledge_base_name=kb1"));
    ASSERT_EQ(files["data"].size(), 2u) << files.dump();
    EXPECT_EQ(files["data"][0]["file_name"], "install.md");
    EXPECT_EQ(files["data"][0]["in_db"], true);
    EXPECT_EQ(files["data"][0]["in_folder"], true);
    EXPECT_EQ(files["data"][1]["file_name"], "sub/returns.txt");
    EXPECT_GT(files["data"][0]["docs_count"].get<int64_t>(), 0);

    r = post_json(c, "/knowledge_base/search_docs", {{"query", "如何安装"}, {"knowledge_base_name", "kb1"}, {"top_k", 3}});
    ASSERT_EQ(r->status, 200) << r->body;
    json hits = body_json(r);
    ASSERT_TRUE(hits.is_array());
    ASSERT_GE(hits.size(), 1u);
    EXPECT_EQ(hits[0]["metadata"]["source"], "install.md");
    EXPECT_NE(hits[0]["page_content"].get<std::string>().find("pdsd init"), std::string::npos);

    // kb_chat stream: the first frame carries the sources, then deltas, then [DONE].
    r = post_json(c, "/chat/kb_chat", {{"query", "如何安装"}, {"kb_name", "kb1"}, {"stream", true}, {"temperature", 0}, {"max_tokens", 4}});
    ASSERT_EQ(r->status, 200) << r->body;
    auto frames = sse_data(r->body);
    ASSERT_GE(frames.size(), 3u);
    json first = json::parse(frames[0]);
    ASSERT_TRUE(first["docs"].is_array());
    EXPECT_EQ(first["docs"][0].get<std::string>().rfind("出处 [1] [install.md]", 0), 0u) << first.dump();
    EXPECT_EQ(frames.back(), "[DONE]");
    // return_direct: the sources alone.
    r = post_json(c, "/chat/kb_chat", {{"query", "如何安装"}, {"kb_name", "kb1"}, {"stream", false}, {"return_direct", true}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_FALSE(body_json(r)["docs"].empty());

    r = c.Get("/knowledge_base/download_doc?knowledge_base_name=kb1&file_name=install.md");
    ASSERT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("pdsd init"), std::string::npos);

    r = post_json(c, "/knowledge_base/delete_docs", {{"knowledge_base_name", "kb1"}, {"file_names", {"install.md", "missing.md"}}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_TRUE(body_json(r)["data"]["failed_files"].contains("missing.md"));
    files = body_json(c.Get("/knowledge_base/list_files?knowledge_base_name=kb1"));
    ASSERT_EQ(files["data"].size(), 1u);
    EXPECT_EQ(files["data"][0]["file_name"], "sub/returns.txt");

    r = post_json(c, "/knowledge_base/recreate_vector_store", {{"knowledge_base_name", "kb1"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_NE(r->body.find("sub/returns.txt"), std::string::npos);

    // Chatchat sends the bare name as the JSON body.
    r = c.Post("/knowledge_base/delete_knowledge_base", "\"kb1\"", "application/json");
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_TRUE(body_json(c.Get("/knowledge_base/list_knowledge_bases"))["data"].empty());
    EXPECT_FALSE(fs::exists(fs::path(s.root.str()) / "knowledge_base" / "kb1"));
    r = c.Post("/knowledge_base/delete_knowledge_base", "\"kb1\"", "application/json");
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(body_json(r)["code"], 404);
}

TEST(Serve, KbChatSourceLinkDownloadsTheFile) {
    // The 出处 link is urlencoded as Chatchat's (Python's urlencode: a space is "+", parentheses
    // are escaped); following it must fetch the cited file (httplib reads "+" as a space).
    Running s;
    auto c = s.client();
    ASSERT_EQ(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb 3"}})->status, 200);
    const std::string name = "退货 政策 (v2).md", content = "退货政策：七天无理由退货，保留发票。\n";
    httplib::MultipartFormDataItems items = {{"files", content, name, "text/markdown"}, {"knowledge_base_name", "kb 3", "", ""}};
    ASSERT_EQ(c.Post("/knowledge_base/upload_docs", items)->status, 200);
    auto r = post_json(c, "/chat/kb_chat", {{"query", "退货政策"}, {"kb_name", "kb 3"}, {"stream", false}, {"return_direct", true}});
    ASSERT_EQ(r->status, 200) << r->body;
    const std::string doc = body_json(r)["docs"].at(0).get<std::string>();
    const std::string head = "出处 [1] [" + name + "](";
    ASSERT_EQ(doc.rfind(head, 0), 0u) << doc;
    const std::string url = doc.substr(head.size(), doc.find(") \n\n") - head.size());
    EXPECT_NE(url.find("knowledge_base_name=kb+3&file_name="), std::string::npos) << url;
    EXPECT_EQ(url.find_first_of(" ()"), std::string::npos) << url;
    const std::string path = url.substr(url.find("/knowledge_base/download_doc?"));
    c.set_url_encode(false);   // send the link as a browser does (httplib's client would escape "+")
    auto d = c.Get(path.c_str());
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 200) << path;
    EXPECT_EQ(d->body, content);
}

TEST(Serve, UploadAndDeleteCannotEscapeTheKnowledgeBase) {
    Running s;
    auto c = s.client();
    ASSERT_EQ(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "kb2"}})->status, 200);
    const fs::path content = fs::path(s.root.str()) / "knowledge_base" / "kb2" / "content";
    // A symlinked folder inside content/ pointing outside.
    const fs::path outside = fs::temp_directory_path() / ("pdsd-serve-outside-" + std::to_string(::getpid()));
    fs::remove_all(outside);
    fs::create_directories(outside);
    fs::create_directory_symlink(outside, content / "link");
    std::vector<std::string> names = {"../evil.md", "../../evil.md", "/tmp/evil.md", "a/../../evil.md", "./x.md", "a//b.md",
                                      "a\\..\\evil.md", std::string("a\0b.md", 6), "link/evil.md", "", "..", "a/.."};
    for (const std::string& name : names) {
        httplib::MultipartFormDataItems items = {{"files", "x", name, "text/plain"}, {"knowledge_base_name", "kb2", "", ""}};
        auto r = c.Post("/knowledge_base/upload_docs", items);
        ASSERT_TRUE(r);
        EXPECT_GE(r->status, 400) << name;
        EXPECT_LT(r->status, 500) << name;
        expect_alive(s);
    }
    EXPECT_TRUE(fs::is_empty(outside));
    EXPECT_FALSE(fs::exists(fs::path(s.root.str()) / "knowledge_base" / "evil.md"));
    EXPECT_FALSE(fs::exists(fs::path(s.root.str()) / "evil.md"));
    for (std::string name : {"../evil.md", "/etc/passwd", "link/x", "a/../../b"}) {
        expect_error_shape(post_json(c, "/knowledge_base/delete_docs", {{"knowledge_base_name", "kb2"}, {"file_names", {name}}}), 400);
        auto r = c.Get(("/knowledge_base/download_doc?knowledge_base_name=kb2&file_name=" + httplib::detail::encode_query_param(name)).c_str());
        EXPECT_EQ(r->status, 400) << name;
    }
    // Knowledge-base names cannot be paths either.
    for (std::string kb : {"..", "../kb2", "a/b", "."}) {
        auto r = post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", kb}});
        EXPECT_EQ(r->status, 403) << kb;
        httplib::MultipartFormDataItems items = {{"files", "x", "x.md", "text/plain"}, {"knowledge_base_name", kb, "", ""}};
        EXPECT_EQ(c.Post("/knowledge_base/upload_docs", items)->status, 403) << kb;
    }
    expect_alive(s);
    fs::remove(content / "link");
    fs::remove_all(outside);
}

TEST(Serve, EmbeddingsFloatAndBase64) {
    Running s;
    auto c = s.client();
    auto r = post_json(c, "/v1/embeddings", {{"input", {"如何安装", "退货"}}, {"model", "hash-ngram"}});
    ASSERT_EQ(r->status, 200) << r->body;
    json j = body_json(r);
    ASSERT_EQ(j["data"].size(), 2u);
    EXPECT_EQ(j["data"][1]["index"], 1);
    EXPECT_EQ(j["data"][0]["embedding"].size(), 256u);
    double norm = 0;
    for (auto& x : j["data"][0]["embedding"]) norm += x.get<double>() * x.get<double>();
    EXPECT_NEAR(norm, 1.0, 1e-5);
    EXPECT_GT(j["usage"]["prompt_tokens"].get<int64_t>(), 0);
    r = post_json(c, "/v1/embeddings", {{"input", "如何安装"}, {"encoding_format", "base64"}});
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(body_json(r)["data"][0]["embedding"].get<std::string>().size(), (256u * 4 + 2) / 3 * 4);
}

TEST(Serve, WebPageIsEmbedded) {
    Running s({}, /*with_model=*/false);
    auto c = s.client();
    std::string page = read_file(test::source_dir() + "/share/web/index.html");
    for (const char* path : {"/", "/index.html"}) {
        auto r = c.Get(path);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
        EXPECT_EQ(r->body, page);
    }
    // No model: chat is 503, KB routes still work.
    expect_error_shape(post_json(c, "/v1/chat/completions", chat_body("x", 1)), 503);
    EXPECT_EQ(c.Get("/knowledge_base/list_knowledge_bases")->status, 200);
}

TEST(Serve, MetricsCountRequestsAndTokens) {
    Running s;
    auto c = s.client();
    post_json(c, "/v1/chat/completions", chat_body("hi", 4));
    c.Get("/nope");
    // A request is counted after its response is written: poll briefly.
    auto r = c.Get("/metrics");
    for (int i = 0; i < 100; ++i) {
        ASSERT_EQ(r->status, 200);
        if (r->body.find("route=\"other\",status=\"404\"} 1") != std::string::npos &&
            r->body.find("route=\"/v1/chat/completions\",status=\"200\"} 1") != std::string::npos)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        r = c.Get("/metrics");
    }
    EXPECT_NE(r->body.find("pdsd_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1"), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("pdsd_http_requests_total{route=\"other\",status=\"404\"} 1"), std::string::npos);
    EXPECT_NE(r->body.find("pdsd_generated_tokens_total 4"), std::string::npos);
    EXPECT_NE(r->body.find("pdsd_http_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 1"), std::string::npos);
    EXPECT_NE(r->body.find("pdsd_time_to_first_token_seconds_count 1"), std::string::npos);
}

TEST(Serve, DisconnectStopsGeneration) {
    Running s;
    httplib::Client c("127.0.0.1", s.port);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = chat_body("tell me a long story", 100000, true).dump();
    req.set_header("Content-Type", "application/json");
    int chunks = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 4; };  // then hang up
    auto t0 = std::chrono::steady_clock::now();
    c.send(req);
    // The generation is cancelled at its next token: the queue empties long before 100000 tokens.
    int depth = 1;
    for (int i = 0; i < 1500 && depth != 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        depth = body_json(s.client().Get("/health"))["queue_depth"].get<int>();
    }
    EXPECT_EQ(depth, 0);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);  // 100000 tokens take minutes
    auto m = s.client().Get("/metrics");
    EXPECT_NE(m->body.find("pdsd_generations_total{outcome=\"cancelled\"} 1"), std::string::npos) << m->body;
}

TEST(Serve, ConcurrentStreamsDoNotMix) {
    Running s;
    const int n = 8;
    std::vector<std::string> got(n), want(n);
    for (int i = 0; i < n; ++i) want[i] = reference({{"user", "问题 " + std::to_string(i)}}, 8).text;
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) {
        ts.emplace_back([&, i] {
            auto c = s.client();
            auto r = post_json(c, "/v1/chat/completions", chat_body("问题 " + std::to_string(i), 8, true));
            if (!r || r->status != 200) return;
            auto frames = sse_data(r->body);
            std::string id = json::parse(frames[0])["id"];
            for (size_t k = 1; k + 2 < frames.size(); ++k) {
                json f = json::parse(frames[k]);
                if (f["id"] != id) return;
                got[i] += f["choices"][0]["delta"]["content"].get<std::string>();
            }
        });
    }
    for (auto& t : ts) t.join();
    for (int i = 0; i < n; ++i) EXPECT_EQ(got[i], want[i]) << i;
}

TEST(Serve, BatchedGreedyRowsEqualTheirAloneAnswers) {
    serve::ServeOptions o;
    o.max_batch = 8;
    Running s(o);
    const int n = 6;
    std::vector<std::string> got(n), want(n), finish(n);
    std::vector<int64_t> used(n, -1);
    for (int i = 0; i < n; ++i) want[i] = reference({{"user", "批量 " + std::string(static_cast<size_t>(i + 1), 'x')}}, 3 + i).text;
    s.server->pause_worker(true);   // let all requests queue up, so they run as one batch
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) {
        ts.emplace_back([&, i] {
            auto c = s.client();
            bool stream = i % 2 == 0;
            auto r = post_json(c, "/v1/chat/completions", chat_body("批量 " + std::string(static_cast<size_t>(i + 1), 'x'), 3 + i, stream));
            if (!r || r->status != 200) return;
            if (stream) {
                auto frames = sse_data(r->body);
                for (size_t k = 1; k + 2 < frames.size(); ++k) got[i] += json::parse(frames[k])["choices"][0]["delta"]["content"].get<std::string>();
                finish[i] = json::parse(frames[frames.size() - 2])["choices"][0]["finish_reason"];
            } else {
                json j = body_json(r);
                got[i] = j["choices"][0]["message"]["content"];
                finish[i] = j["choices"][0]["finish_reason"];
                used[i] = j["usage"]["completion_tokens"];
            }
        });
    }
    bool queued = false;
    for (int i = 0; i < 1500 && !queued; ++i) {
        queued = body_json(s.client().Get("/health"))["queue_depth"] == n;
        if (!queued) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    s.server->pause_worker(false);
    EXPECT_TRUE(queued) << "the requests did not all reach the queue";
    for (auto& t : ts) t.join();
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ(got[i], want[i]) << i;
        EXPECT_EQ(finish[i], "length") << i;
        if (used[i] >= 0) {
            EXPECT_EQ(used[i], 3 + i) << i;
        }
    }
    auto m = s.client().Get("/metrics");
    EXPECT_NE(m->body.find("pdsd_generation_batches_total 1\n"), std::string::npos) << m->body;
    EXPECT_NE(m->body.find("pdsd_generation_batch_rows_total 6\n"), std::string::npos);
}

// ---- hostile requests (issue 16): clear 4xx, nothing left behind ----------------------------

TEST(Serve, NullContentIsRefusedForUserTurnsOnly) {
    Running s;
    auto c = s.client();
    json b = chat_body("x", 3);
    b["messages"] = {{{"role", "user"}, {"content", nullptr}}};
    auto r = post_json(c, "/v1/chat/completions", b);
    expect_error_shape(r, 400);
    EXPECT_EQ(body_json(r)["error"]["param"], "messages[0].content");
    // An assistant turn without text (a tool-call turn in OpenAI's API) stays valid.
    b["messages"] = {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", nullptr}},
                     {{"role", "user"}, {"content", "again"}}};
    r = post_json(c, "/v1/chat/completions", b);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
}

TEST(Serve, PromptLongerThanTheContextIs400ContextLengthExceeded) {
    // The tiny model with a 64-position context (same weights: RoPE does not store positions).
    const fs::path model_dir = fs::path(TinyModel::get().dir).string() + "-ctx64";   // TempDir's name is the server root's
    fs::remove_all(model_dir);
    fs::create_directories(model_dir);
    for (auto& e : fs::directory_iterator(TinyModel::get().dir)) fs::copy(e.path(), model_dir / e.path().filename());
    const std::string cfg_path = (model_dir / "config.json").string();
    json cfg = json::parse(read_file(cfg_path));
    cfg["max_position_embeddings"] = 64;
    write_file_atomic(cfg_path, cfg.dump(2));
    serve::ServeOptions o;
    o.model_dir = model_dir.string();
    Running s(o, /*with_model=*/false);
    auto c = s.client();
    std::string long_text;
    for (int i = 0; i < 60; ++i) long_text += "你好 ";
    for (bool stream : {false, true}) {
        auto r = post_json(c, "/v1/chat/completions", chat_body(long_text, 3, stream));
        ASSERT_TRUE(r);
        if (!stream) {
            expect_error_shape(r, 400);
            EXPECT_EQ(body_json(r)["error"]["code"], "context_length_exceeded") << r->body;
        } else {   // the stream has started (200): the error is its event, as llama-server sends it
            EXPECT_NE(r->body.find("context_length_exceeded"), std::string::npos) << r->body;
        }
    }
    // A prompt that fits still answers.
    json b = chat_body("hi", 3);
    b["messages"] = {{{"role", "system"}, {"content", "s"}}, {{"role", "user"}, {"content", "hi"}}};
    auto r = post_json(c, "/v1/chat/completions", b);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    fs::remove_all(model_dir);
}

TEST(Serve, HostileUploadIs400AndDoesNotStayInContent) {
    Running s;
    auto c = s.client();
    ASSERT_EQ(post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "h"}})->status, 200);
    const fs::path content = fs::path(s.root.str()) / "knowledge_base" / "h" / "content";
    const std::string deep(30000, '[');   // 30,000 levels: crashed the server before
    httplib::MultipartFormDataItems one = {{"files", deep, "deep.json", "application/json"},
                                           {"knowledge_base_name", "h", "", ""}};
    auto r = c.Post("/knowledge_base/upload_docs", one);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_EQ(body_json(r)["code"], 400);
    EXPECT_TRUE(body_json(r)["data"]["failed_files"].contains("deep.json")) << r->body;
    EXPECT_FALSE(fs::exists(content / "deep.json"));
    // With a good file beside it: 200, the good one stored and indexed, the hostile one not kept.
    httplib::MultipartFormDataItems two = {{"files", deep, "deep.json", "application/json"},
                                           {"files", "退货政策：七天无理由退货。\n", "ok.txt", "text/plain"},
                                           {"knowledge_base_name", "h", "", ""}};
    r = c.Post("/knowledge_base/upload_docs", two);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_TRUE(body_json(r)["data"]["failed_files"].contains("deep.json")) << r->body;
    EXPECT_FALSE(fs::exists(content / "deep.json"));
    EXPECT_TRUE(fs::exists(content / "ok.txt"));
    // A 300-byte name (Linux allows 255): a 400 naming the reason, not a 500.
    httplib::MultipartFormDataItems long_name = {{"files", "x", std::string(300, 'a') + ".txt", "text/plain"},
                                                 {"knowledge_base_name", "h", "", ""}};
    r = c.Post("/knowledge_base/upload_docs", long_name);
    expect_error_shape(r, 400);
    EXPECT_NE(r->body.find("255"), std::string::npos) << r->body;
    expect_alive(s);
}

TEST(Serve, FailedCreateLeavesNoFolder) {
    Running s;
    auto c = s.client();
    auto r = post_json(c, "/knowledge_base/create_knowledge_base",
                       {{"knowledge_base_name", "nope"}, {"embed_model", "no-such-embedding-model"}});
    ASSERT_TRUE(r);
    EXPECT_GE(r->status, 400) << r->body;
    EXPECT_LT(r->status, 500) << r->body;
    EXPECT_FALSE(fs::exists(fs::path(s.root.str()) / "knowledge_base" / "nope"));
    // The name is free for a create that works.
    r = post_json(c, "/knowledge_base/create_knowledge_base", {{"knowledge_base_name", "nope"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
}

// /v1/completions: the prompt continued as it is (no chat template), as a string or as token
// ids, equal to the generator's greedy continuation; OpenAI's 16-token default; echo; the
// stream's text pieces add up to the answer; unsupported options are 400s naming them.
TEST(Serve, CompletionsContinueThePromptAsItIs) {
    Running s;
    auto c = s.client();
    auto& m = TinyModel::get();
    const std::string prompt = "从前有座山，山里有座庙，";
    auto ids32 = m.tok->encode(prompt);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    model::GenerationOptions g;
    g.do_sample = false;
    g.max_new_tokens = 16;
    auto want = m.gen->generate(ids, g);
    const std::string want_text = m.tok->decode(std::vector<tokenizer::TokenId>(want.tokens.begin(), want.tokens.end()), true);

    auto r = post_json(c, "/v1/completions", {{"model", "tiny"}, {"prompt", prompt}, {"temperature", 0}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = body_json(r);
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["choices"][0]["text"], want_text);
    EXPECT_EQ(j["usage"]["prompt_tokens"], static_cast<int64_t>(ids.size()));
    EXPECT_EQ(j["usage"]["completion_tokens"], static_cast<int64_t>(want.tokens.size()));   // 16 unless eos came first
    // Token ids and [string] give the same answer; echo prepends the prompt.
    auto r2 = post_json(c, "/v1/completions", {{"prompt", ids}, {"temperature", 0}});
    ASSERT_TRUE(r2);
    EXPECT_EQ(body_json(r2)["choices"][0]["text"], want_text) << r2->body;
    auto r3 = post_json(c, "/v1/completions", {{"prompt", {prompt}}, {"temperature", 0}, {"echo", true}});
    ASSERT_TRUE(r3);
    EXPECT_EQ(body_json(r3)["choices"][0]["text"], prompt + want_text) << r3->body;
    // Streamed: text pieces, then finish_reason, then [DONE].
    auto r4 = post_json(c, "/v1/completions", {{"prompt", prompt}, {"temperature", 0}, {"stream", true}});
    ASSERT_TRUE(r4);
    auto frames = sse_data(r4->body);
    ASSERT_GE(frames.size(), 2u);
    EXPECT_EQ(frames.back(), "[DONE]");
    std::string text;
    for (size_t i = 0; i + 2 < frames.size(); ++i) text += json::parse(frames[i])["choices"][0]["text"].get<std::string>();
    EXPECT_EQ(text, want_text);
    EXPECT_FALSE(json::parse(frames[frames.size() - 2])["choices"][0]["finish_reason"].is_null());
    for (const auto& [body, word] : std::vector<std::pair<json, std::string>>{
             {{{"prompt", 3}}, "prompt"},
             {{{"prompt", {1, -2}}}, "prompt"},
             {{{"prompt", {1, 99999999}}}, "vocabulary"},
             {{{"prompt", "x"}, {"suffix", "y"}}, "suffix"},
             {{{"prompt", "x"}, {"logprobs", 2}}, "logprobs"},
             {{{"prompt", {1, 2}}, {"echo", true}}, "echo"},
             {json::object(), "prompt"}}) {
        auto b = post_json(c, "/v1/completions", body);
        ASSERT_TRUE(b);
        EXPECT_EQ(b->status, 400) << body.dump() << " " << b->body;
        EXPECT_NE(b->body.find(word), std::string::npos) << b->body;
    }
}
