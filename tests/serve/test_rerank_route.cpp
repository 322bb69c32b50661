// pdsd serve --rerank-model: POST /v1/rerank (and /rerank, /v2/rerank) in Xinference's /
// Cohere's shape over real HTTP on an ephemeral 127.0.0.1 port, its errors, and the
// Chatchat KB route search_docs ranked by the same reranker. Model: the tiny golden
// cross-encoder tests/fixtures/tiny-xlmr-reranker (no chat model).
#include "serve_fixture.h"

#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/reranker.h"
#include "pdsd/model/loader.h"

#include <filesystem>
#include <fstream>

using namespace pdsd;
using namespace pdsd::serve_test;

namespace {

const std::string kReranker = std::string(PDSD_FIXTURES_DIR) + "/tiny-xlmr-reranker";

serve::ServeOptions rerank_options(const std::string& rerank_model) {
    serve::ServeOptions o;
    o.embed_model = "none";
    o.rerank_model = rerank_model;
    return o;
}

// The shared test server (serve_fixture.h) with `rerank_model` and a three-file KB "t" (BM25
// only). The KB is indexed after the server starts: KB routes read it from disk per request.
struct RerankServer : Running {
    explicit RerankServer(const std::string& rerank_model) : Running(rerank_options(rerank_model), false) {
        std::string content = kb::KbPaths{root.str()}.content_dir("t");
        fs::create_directories(content);
        std::ofstream(content + "/a.txt") << "证书过期：错误码 E2003，请更新证书。";
        std::ofstream(content + "/b.txt") << "证书过期后如何续期：运行 renew 命令。";
        std::ofstream(content + "/c.txt") << "连接超时：检查网络与防火墙。";
        kb::UpdateOptions u;
        u.progress = false;
        u.embed_model = "none";
        kb::update_knowledge_bases(root.str(), u);
    }
    httplib::Result post(const std::string& path, const json& body) const {
        auto c = client();
        return post_json(c, path, body);
    }
};

// The reranker as the server opens it: kb_settings.yaml's embed_dtype (default auto: bf16 on
// CPUs with native bf16, as CI's, else fp32), so scores compare exactly on every machine.
std::unique_ptr<kb::Reranker> reranker_like_server() {
    kb::RerankerOptions o;
    o.dtype = kb::KbSettings{}.embed_dtype;
    return kb::open_reranker("", kReranker, o);
}

void expect_400(const httplib::Result& r, const std::string& word) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r->body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(word), std::string::npos) << r->body;
}

}  // namespace

TEST(Serve, RerankRouteScoresLikeTheRerankerInXinferenceShape) {
    RerankServer s(kReranker);
    const std::vector<std::string> docs = {"证书过期：错误码 E2003。", "天气很好。", "The knowledge base is rebuilt with pdsd kb -r.",
                                           "如何重建知识库？运行 pdsd kb -r。"};
    auto direct = reranker_like_server()->scores("如何重建知识库？", docs);
    json body{{"model", "tiny-xlmr-reranker"}, {"query", "如何重建知识库？"}, {"top_n", 3}, {"return_documents", true},
              {"documents", {docs[0], docs[1], docs[2], {{"text", docs[3]}}}}};   // Cohere's {"text"} form too
    auto r = s.post("/v1/rerank", body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = json::parse(r->body);
    EXPECT_EQ(j["model"], "tiny-xlmr-reranker");
    EXPECT_TRUE(j["id"].is_string());
    EXPECT_EQ(j["meta"]["api_version"]["version"], "1");
    ASSERT_EQ(j["results"].size(), 3u);
    double prev = 2.0;
    std::vector<bool> seen(docs.size(), false);
    for (auto& x : j["results"]) {
        size_t i = x["index"].get<size_t>();
        ASSERT_LT(i, docs.size());
        EXPECT_FALSE(seen[i]);
        seen[i] = true;
        double sc = x["relevance_score"].get<double>();
        EXPECT_NEAR(sc, direct[i], 1e-9);
        EXPECT_LE(sc, prev);   // best first
        prev = sc;
        EXPECT_EQ(x["document"]["text"], docs[i]);
    }
    // The one left out is the lowest.
    for (size_t i = 0; i < docs.size(); ++i)
        if (!seen[i]) {
            EXPECT_LE(direct[i], prev);
        }

    // Defaults: every document, no document text (Xinference's return_documents false);
    // llama-server's and Cohere v2's paths answer the same.
    for (const char* path : {"/v1/rerank", "/rerank", "/v2/rerank"}) {
        auto r2 = s.post(path, {{"query", "如何重建知识库？"}, {"documents", docs}});
        ASSERT_TRUE(r2);
        ASSERT_EQ(r2->status, 200) << path << r2->body;
        json k = json::parse(r2->body);
        ASSERT_EQ(k["results"].size(), docs.size()) << path;
        EXPECT_TRUE(k["results"][0]["document"].is_null());
        EXPECT_EQ(k["results"][0]["index"], j["results"][0]["index"]);
    }
}

TEST(Serve, RerankRouteRejectsMalformedRequestsAndKeepsServing) {
    RerankServer s(kReranker);
    expect_400(s.post("/v1/rerank", {{"documents", {"a"}}}), "query");
    expect_400(s.post("/v1/rerank", {{"query", "q"}, {"documents", "a"}}), "documents");
    expect_400(s.post("/v1/rerank", {{"query", "q"}, {"documents", {"a", 3}}}), "documents[1]");
    expect_400(s.post("/v1/rerank", {{"query", "q"}, {"documents", {"a"}}, {"top_n", 0}}), "top_n");
    expect_400(s.post("/v1/rerank", {{"query", "q"}, {"documents", {"a"}}, {"return_documents", "yes"}}), "return_documents");
    auto ok = s.post("/v1/rerank", {{"query", "q"}, {"documents", json::array()}});
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200);
    EXPECT_TRUE(json::parse(ok->body)["results"].empty());
    RerankServer none("none");
    expect_400(none.post("/v1/rerank", {{"query", "q"}, {"documents", {"a"}}}), "no reranker");
}

TEST(Serve, KbSearchDocsIsRankedByTheServersReranker) {
    RerankServer s(kReranker);
    json body{{"knowledge_base_name", "t"}, {"query", "证书过期"}, {"top_k", 3}};
    auto r = s.post("/knowledge_base/search_docs", body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json hits = json::parse(r->body);
    ASSERT_FALSE(hits.empty());
    auto rr = reranker_like_server();
    double prev = 2.0;
    for (auto& h : hits) {
        ASSERT_TRUE(h["metadata"]["pdsd"].contains("rerank")) << h.dump();
        double sc = h["metadata"]["pdsd"]["rerank"].get<double>();
        EXPECT_LE(sc, prev);
        prev = sc;
        // Scored alone here, in the server's candidate batch there: equal to 1e-6 in fp32; in
        // bf16 (CPUs with native bf16) a different batch shape may round differently (~0.4%).
        EXPECT_NEAR(sc, rr->scores("证书过期", {h["page_content"].get<std::string>()})[0], model::cpu_has_native_bf16() ? 5e-3 : 1e-6);
    }
    RerankServer plain("none");
    auto p = plain.post("/knowledge_base/search_docs", body);
    ASSERT_TRUE(p);
    json ph = json::parse(p->body);
    ASSERT_FALSE(ph.empty());
    EXPECT_FALSE(ph[0]["metadata"]["pdsd"].contains("rerank"));
}
