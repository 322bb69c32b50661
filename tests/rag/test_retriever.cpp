// rag::Retriever and the thread-safe KnowledgeBase::search under it: repeated opens reuse
// one object, a write (a file added, kb_settings.yaml changed) is seen by the next get(),
// concurrent searches return what one thread does, a BM25 search does not wait for a
// dense search whose embedder is busy, and a query is embedded on the searching thread
// without an OpenMP team.
#include "pdsd/core/error.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt.h"
#include "pdsd/rag/retriever.h"
#include "test_util.h"

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <omp.h>

namespace fs = std::filesystem;
using namespace pdsd;

namespace {

void write(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

// A KB "kb" under `root` of 12 small files (distinct topics, a shared vocabulary), built
// with `embed` ("none" = BM25 only).
void build_kb(const std::string& root, const std::string& embed) {
    const char* topics[] = {"安装", "密码", "备份", "升级", "网络", "证书", "日志", "权限", "监控", "存储", "集群", "许可"};
    for (int i = 0; i < 12; ++i) {
        std::string t = topics[i];
        write(root + "/knowledge_base/kb/content/doc" + std::to_string(i) + ".md",
              "# " + t + "指南\n\n星河网关的" + t + "步骤：先检查" + t + "配置，再执行" + t + "命令。\n\n常见问题：" + t +
                  "失败时查看系统日志并联系管理员。topic" + std::to_string(i) + "\n");
    }
    kb::UpdateOptions u;
    u.kb_names = {"kb"};
    u.mode = kb::UpdateMode::recreate;
    u.embed_model = embed;
    u.progress = false;
    kb::update_knowledge_bases(root, u);
}

kb::SearchOptions mode(const std::string& m, size_t top_k = 5) {
    kb::SearchOptions o;
    o.mode = m;
    o.top_k = top_k;
    o.score_threshold = m == "bm25" ? 0.0 : -1.0;
    return o;
}

// What a search returned, compared across threads: (chunk id, score) in rank order.
std::vector<std::pair<int64_t, double>> ids(const std::vector<kb::SearchHit>& hits) {
    std::vector<std::pair<int64_t, double>> v;
    for (auto& h : hits) v.push_back({h.chunk_id, h.score});
    return v;
}

// hash-ngram-64 whose embed() can be held: while `hold` is set a call blocks until
// released, after saying it entered. Not thread-safe (as a torch model is not), so the KB
// serialises it.
class GatedEmbedder : public kb::Embedder {
public:
    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) override {
        std::unique_lock<std::mutex> lock(mu_);
        if (hold_) {
            ++entered_;
            cv_.notify_all();
            cv_.wait(lock, [this] { return !hold_; });
        }
        return inner_.embed(texts, is_query);
    }
    int dim() const override { return 64; }
    std::string name() const override { return "gated-test"; }
    void hold() { std::lock_guard<std::mutex> l(mu_); hold_ = true; }
    void release() { { std::lock_guard<std::mutex> l(mu_); hold_ = false; } cv_.notify_all(); }
    void wait_entered() { std::unique_lock<std::mutex> l(mu_); cv_.wait(l, [this] { return entered_ > 0; }); }

private:
    kb::HashNgramEmbedder inner_{64};
    std::mutex mu_;
    std::condition_variable cv_;
    bool hold_ = false;
    int entered_ = 0;
};

// hash-ngram-64 that records, for each query it embeds, the calling thread and its
// OpenMP team size.
class RecordingEmbedder : public kb::Embedder {
public:
    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) override {
        if (is_query) {
            std::lock_guard<std::mutex> l(mu_);
            calls.push_back({std::this_thread::get_id(), omp_get_max_threads()});
        }
        return inner_.embed(texts, is_query);
    }
    int dim() const override { return 64; }
    std::string name() const override { return "recording-test"; }
    bool thread_safe() const override { return true; }
    std::vector<std::pair<std::thread::id, int>> calls;

private:
    kb::HashNgramEmbedder inner_{64};
    std::mutex mu_;
};

// build_kb with a test embedder E registered as `name`; the Retriever searches with the
// returned instance (so a test can hold or inspect it).
template <class E>
std::shared_ptr<E> build_kb_with(const std::string& root, const std::string& name, rag::Retriever& r) {
    kb::register_embedder_factory(name, [name](const std::string& n) -> std::unique_ptr<kb::Embedder> {
        return n == name ? std::make_unique<E>() : nullptr;
    });
    build_kb(root, name);
    auto e = std::make_shared<E>();
    r.add_embedder({name}, e);
    return e;
}

}  // namespace

TEST(Retriever, RepeatedGetsReuseOneKnowledgeBase) {
    test::TempDir d;
    build_kb(d.str(), "none");
    rag::Retriever r;
    auto a = r.get(d.str(), "kb");
    auto b = r.get(d.str(), "kb");
    EXPECT_EQ(a.get(), b.get());
    EXPECT_EQ(r.opens(), 1);
    EXPECT_TRUE(a->is_current());
    EXPECT_THROW(r.get(d.str(), "missing"), DataError);
    EXPECT_EQ(r.settings(d.str()).top_k, 3);   // no kb_settings.yaml: the defaults
}

TEST(Retriever, AFileAddedIsFoundByTheNextGet) {
    test::TempDir d;
    build_kb(d.str(), "hash-ngram");
    rag::Retriever r;
    auto before = r.get(d.str(), "kb");
    EXPECT_TRUE(before->search("量子隧穿", mode("bm25")).empty());
    write(d.file("new.md"), "# 量子隧穿\n\n量子隧穿模块的使用说明。\n");
    kb::UpdateOptions u;
    u.progress = false;
    u.embed_model = "hash-ngram";
    kb::add_files(d.str(), "kb", {d.file("new.md")}, u);
    EXPECT_FALSE(before->is_current());
    auto after = r.get(d.str(), "kb");
    EXPECT_NE(after.get(), before.get());
    EXPECT_EQ(after->generation(), before->generation() + 1);
    auto hits = after->search("量子隧穿", mode("bm25"));
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "new.md");
    // Dense: the new vector store is loaded (the old object's index lacks the chunk).
    EXPECT_EQ(after->search("量子隧穿模块的使用说明", mode("dense", 1))[0].file_name, "new.md");
    EXPECT_EQ(r.get(d.str(), "kb").get(), after.get());
    EXPECT_EQ(r.opens(), 2);

    // kb_settings.yaml rewritten: the settings and the KB (which holds them) are re-read.
    write(d.file("kb_settings.yaml"), "top_k: 7\n");
    EXPECT_EQ(r.settings(d.str()).top_k, 7);
    auto resettled = r.get(d.str(), "kb");
    EXPECT_NE(resettled.get(), after.get());
    EXPECT_EQ(resettled->settings().top_k, 7);

    // Dropped and made again under the same name: a new object (a new id), not the old one.
    kb::delete_knowledge_base(d.str(), "kb");
    EXPECT_THROW(r.get(d.str(), "kb"), DataError);
    build_kb(d.str(), "none");
    EXPECT_EQ(r.get(d.str(), "kb")->embed_model(), "none");
}

TEST(Retriever, EightThreadsGetWhatOneThreadGets) {
    test::TempDir d;
    build_kb(d.str(), "hash-ngram");
    rag::Retriever r;
    auto base = r.get(d.str(), "kb");
    const std::vector<std::string> queries = {"安装步骤", "忘记密码", "备份失败", "升级命令", "网络配置", "证书过期",
                                              "查看日志", "权限管理", "监控告警", "存储扩容", "集群节点", "许可证"};
    const std::vector<std::string> modes = {"bm25", "dense", "hybrid"};
    std::vector<std::vector<std::pair<int64_t, double>>> want;
    for (auto& m : modes)
        for (auto& q : queries) want.push_back(ids(base->search(q, mode(m))));
    std::vector<std::future<bool>> runs;
    for (int t = 0; t < 8; ++t) {
        runs.push_back(std::async(std::launch::async, [&, t] {
            bool same = true;
            for (int rep = 0; rep < 5; ++rep) {
                size_t i = 0;
                for (auto& m : modes)
                    for (auto& q : queries) {
                        // Every thread also goes through get() (the server's path per request).
                        auto hits = r.get(d.str(), "kb")->search(q, mode(m));
                        same = same && ids(hits) == want[i++];
                        (void)t;
                    }
            }
            return same;
        }));
    }
    for (auto& f : runs) EXPECT_TRUE(f.get());
    EXPECT_EQ(r.opens(), 1);
    // And through the RAG turn the server's kb_chat uses.
    EXPECT_EQ(ids(rag::retrieve(*base, "安装步骤", mode("bm25")).sources), want[0]);
}

TEST(Retriever, Bm25DoesNotWaitForABusyEmbedder) {
    test::TempDir d;
    rag::Retriever r;
    auto gated = build_kb_with<GatedEmbedder>(d.str(), "gated-test", r);
    auto base = r.get(d.str(), "kb");
    base->vector_index_info();   // the index loaded before the embedder is held

    gated->hold();
    auto dense = std::async(std::launch::async, [&] { return base->search("安装步骤", mode("dense")); });
    gated->wait_entered();   // the dense search is inside embed() now
    auto bm25 = std::async(std::launch::async, [&] { return r.get(d.str(), "kb")->search("安装步骤", mode("bm25")); });
    ASSERT_EQ(bm25.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "BM25 waited for the embedder";
    EXPECT_FALSE(bm25.get().empty());
    EXPECT_EQ(dense.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);   // still held
    gated->release();
    EXPECT_FALSE(dense.get().empty());
}

TEST(Retriever, EmbeddersAreOpenedOnceAndSharedSafely) {
    test::TempDir d;
    rag::Retriever r;
    EXPECT_EQ(r.embedder(d.str(), "none"), nullptr);
    auto a = r.embedder(d.str(), "hash-ngram");
    EXPECT_EQ(a.get(), r.embedder(d.str(), "hash-ngram").get());
    EXPECT_TRUE(a->thread_safe());
    auto g = r.add_embedder({"gated-spec", "/models/gated"}, std::make_shared<GatedEmbedder>());
    EXPECT_TRUE(g->thread_safe());   // wrapped: embed() serialised
    EXPECT_EQ(r.embedder(d.str(), "/models/gated").get(), g.get());
}

// A torch model's ops are OpenMP regions: a team's workers spin after each one, and torch
// gives every new thread a team, so a search embeds its query on the caller's thread with
// a team of one (hybrid's BM25 takes the helper thread) and restores the caller's setting.
TEST(Retriever, AQueryIsEmbeddedOnTheSearchingThreadWithoutATeam) {
    test::TempDir d;
    rag::Retriever r;
    auto rec = build_kb_with<RecordingEmbedder>(d.str(), "recording-test", r);
    auto base = r.get(d.str(), "kb");
    std::thread([&] {
        omp_set_num_threads(4);
        for (const char* m : {"dense", "hybrid"}) {
            kb::SearchOptions o = mode(m);
            for (bool parallel : {true, false}) {
                o.hybrid_parallel = parallel;
                EXPECT_FALSE(base->search("安装步骤", o).empty()) << m;
            }
        }
        EXPECT_EQ(omp_get_max_threads(), 4);   // restored
        ASSERT_EQ(rec->calls.size(), 4u);
        for (auto& [id, team] : rec->calls) {
            EXPECT_EQ(id, std::this_thread::get_id());
            EXPECT_EQ(team, 1);
        }
    }).join();
}
