// The kb verbs and search on vs_type: pg (issue #22, part 2) against the pg_server fixture:
// `kb -r` of the shipped samples into PostgreSQL and into the local store gives the same
// files and chunks, and KnowledgeBase::search the same hits in every mode (BM25 scores within
// 1e-6 relative; dense exact with vector_index flat, HNSW's recall checked apart); the lists,
// delete, is_current after another rebuild, and the refusal of increments. Each test has
// its own PostgreSQL schema; without the pgserver wheel they skip.
#include "pdsd/core/error.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/pg_store.h"
#include "test_util.h"
#include "kb/pg_test_server.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::kb;

namespace {

const char* const kSearchSettings = "embed_model: hash-ngram\nchunk_size: 120\nchunk_overlap: 20\nvector_index: flat\n";

// Two data roots with the shipped samples as KB "samples": one on the local store, one on
// this test's PostgreSQL schema; same chunking and embedder.
class PgKb : public test::PgSchemaTest {
protected:
    void SetUp() override {
        PgSchemaTest::SetUp();
        if (IsSkipped()) return;
        local_ = dir_.file("local");
        pg_ = dir_.file("pg");
        for (auto* r : {&local_, &pg_}) {
            const std::string content = KbPaths{*r}.content_dir("samples");
            fs::create_directories(content);
            for (auto& e : fs::directory_iterator(test::source_dir() + "/share/samples"))
                fs::copy_file(e.path(), content + "/" + e.path().filename().string());
        }
        std::ofstream(local_ + "/kb_settings.yaml") << kSearchSettings;
        write_pg_settings(kSearchSettings);
    }
    void write_pg_settings(const std::string& extra) {
        std::ofstream(pg_ + "/kb_settings.yaml") << "vs_type: pg\npg_connection_uri: " << dsn_ << "\n" << extra;
    }
    static UpdateReport rebuild(const std::string& root) {
        UpdateOptions o;
        o.progress = false;
        return update_knowledge_bases(root, o);
    }
    test::TempDir dir_;
    std::string local_, pg_;   // the two data roots in dir_
};

void expect_same_hits(const std::vector<SearchHit>& local, const std::vector<SearchHit>& pg, const std::string& what) {
    ASSERT_EQ(local.size(), pg.size()) << what;
    for (size_t i = 0; i < local.size(); ++i) {
        const SearchHit &l = local[i], &p = pg[i];
        const std::string at = what + " #" + std::to_string(i);
        EXPECT_EQ(l.file_name, p.file_name) << at;
        EXPECT_EQ(l.chunk_index, p.chunk_index) << at;
        EXPECT_EQ(l.text, p.text) << at;
        EXPECT_EQ(l.start_char, p.start_char) << at;
        EXPECT_EQ(l.kept, p.kept) << at;
        EXPECT_EQ(l.bm25_rank, p.bm25_rank) << at;
        EXPECT_EQ(l.dense_rank, p.dense_rank) << at;
        ASSERT_EQ(l.bm25.has_value(), p.bm25.has_value()) << at;
        if (l.bm25) {
            EXPECT_NEAR(*p.bm25, *l.bm25, 1e-6 * std::abs(*l.bm25)) << at;
        }
        ASSERT_EQ(l.cosine.has_value(), p.cosine.has_value()) << at;
        if (l.cosine) {
            EXPECT_NEAR(*p.cosine, *l.cosine, 1e-5) << at;   // float32 dot products, summed in another order
        }
        EXPECT_NEAR(p.score, l.score, 1e-5 * std::max(1.0, std::abs(l.score))) << at;
    }
}

const std::vector<std::string> kQueries = {"证书过期怎么办", "如何安装", "忘记管理员密码", "E2003", "备份和恢复数据",
                                           "升级固件", "systemctl restart gateway", "配置端口"};

}  // namespace

TEST_F(PgKb, RebuildGivesTheLocalStoresFilesChunksAndHitsInEveryMode) {
    UpdateReport lr = rebuild(local_), pr = rebuild(pg_);
    EXPECT_EQ(pr.chunks_written, lr.chunks_written);
    EXPECT_GT(pr.chunks_written, 20u);
    EXPECT_EQ(pr.count("added"), lr.count("added"));
    EXPECT_EQ(pr.count("failed"), 0u);

    // The catalog: Chatchat's list_kbs / list_files details.
    auto lk = list_knowledge_bases(local_), pk = list_knowledge_bases(pg_);
    ASSERT_EQ(pk.size(), 1u);
    EXPECT_EQ(pk[0].name, "samples");
    EXPECT_TRUE(pk[0].in_db && pk[0].has_folder);
    EXPECT_EQ(pk[0].vs_type, "pg");
    EXPECT_EQ(pk[0].embed_model, "hash-ngram");
    EXPECT_EQ(pk[0].chunk_count, lk[0].chunk_count);
    EXPECT_EQ(pk[0].file_count, lk[0].file_count);
    EXPECT_EQ(pk[0].create_time.size(), 19u) << pk[0].create_time;   // YYYY-MM-DD HH:MM:SS
    auto lf = list_kb_files(local_, "samples"), pf = list_kb_files(pg_, "samples");
    ASSERT_EQ(pf.size(), lf.size());
    for (size_t i = 0; i < lf.size(); ++i) {
        EXPECT_EQ(pf[i].file_name, lf[i].file_name);
        EXPECT_EQ(pf[i].file_ext, lf[i].file_ext);
        EXPECT_EQ(pf[i].document_loader, lf[i].document_loader) << lf[i].file_name;
        EXPECT_EQ(pf[i].text_splitter, lf[i].text_splitter);
        EXPECT_EQ(pf[i].docs_count, lf[i].docs_count) << lf[i].file_name;
        EXPECT_EQ(pf[i].file_version, lf[i].file_version);
        EXPECT_TRUE(pf[i].in_db && pf[i].in_folder);
    }
    auto lc = list_chunks(local_, "samples", "%.MD"), pc = list_chunks(pg_, "samples", "%.MD");
    ASSERT_FALSE(lc.empty());
    expect_same_hits(lc, pc, "list_chunks %.MD");
    expect_same_hits(list_chunks(local_, "samples", ""), list_chunks(pg_, "samples", ""), "list_chunks all");

    // Search: the same ranking stage over the same candidate lists.
    KnowledgeBase lkb(local_, "samples"), pkb(pg_, "samples");
    EXPECT_EQ(pkb.chunk_count(), lkb.chunk_count());
    EXPECT_EQ(pkb.embed_model(), "hash-ngram");
    EXPECT_EQ(pkb.vector_index_info().type, "exact");
    struct Mode { std::string mode, fusion; double threshold; bool explain; };
    for (const Mode& m : {Mode{"bm25", "rrf", 0, false}, Mode{"bm25", "rrf", 3.0, true}, Mode{"dense", "rrf", 0, false},
                          Mode{"dense", "rrf", 0.25, true}, Mode{"hybrid", "rrf", 0, false}, Mode{"hybrid", "weighted", 0, false},
                          Mode{"hybrid", "rrf", 0.3, false}}) {
        SearchOptions o;
        o.mode = m.mode;
        o.fusion = m.fusion;
        o.score_threshold = m.threshold;
        o.explain = m.explain;
        o.top_k = 6;
        o.candidates = 12;
        for (auto& q : kQueries) {
            const std::string what = m.mode + "/" + m.fusion + "/" + std::to_string(m.threshold) + (m.explain ? "/explain " : " ") + q;
            auto l = lkb.search(q, o);
            if (m.mode != "dense" || m.threshold == 0) {
                EXPECT_FALSE(l.empty()) << what;
            }
            expect_same_hits(l, pkb.search(q, o), what);
        }
    }
    SearchOptions serial;   // hybrid's lists one after the other on one thread (both stores)
    serial.mode = "hybrid";
    serial.hybrid_parallel = false;
    for (auto& q : kQueries) expect_same_hits(lkb.search(q, serial), pkb.search(q, serial), "hybrid serial " + q);
}

TEST_F(PgKb, HnswDenseListsRecallTheExactOnes) {
    write_pg_settings("embed_model: hash-ngram\nchunk_size: 120\nchunk_overlap: 20\nvector_index: auto\n");
    rebuild(pg_);
    rebuild(local_);
    KnowledgeBase lkb(local_, "samples"), pkb(pg_, "samples");
    EXPECT_EQ(pkb.vector_index_info().type, "hnsw");
    SearchOptions o;
    o.mode = "dense";
    o.top_k = 5;
    size_t found = 0, wanted = 0;
    for (auto& q : kQueries) {
        std::set<std::pair<std::string, int64_t>> exact;
        for (auto& h : lkb.search(q, o)) exact.insert({h.file_name, h.chunk_index});
        for (auto& h : pkb.search(q, o)) found += exact.count({h.file_name, h.chunk_index});
        wanted += exact.size();
    }
    ASSERT_GT(wanted, 0u);
    EXPECT_GE(static_cast<double>(found) / static_cast<double>(wanted), 0.95) << found << "/" << wanted;
}

TEST_F(PgKb, IsCurrentFollowsRebuildsAndDeleteDropsTheKb) {
    rebuild(pg_);
    KnowledgeBase kb(pg_, "samples");
    EXPECT_TRUE(kb.is_current());
    const int64_t g = kb.generation();
    // Another writer's rebuild (a second process in cli_kb_pg.sh): the open KB is stale, a
    // reopen sees the new generation and the new content.
    std::ofstream(KbPaths{pg_}.content_dir("samples") + "/新增.md") << "# 新增\n\n量子隧穿校准步骤：先冷却探头。";
    rebuild(pg_);
    EXPECT_FALSE(kb.is_current());
    KnowledgeBase again(pg_, "samples");
    EXPECT_EQ(again.generation(), g + 1);
    EXPECT_TRUE(again.is_current());
    auto hits = again.search("量子隧穿校准", SearchOptions{});
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "新增.md");

    EXPECT_TRUE(set_kb_info(pg_, "samples", "样例"));
    EXPECT_EQ(list_knowledge_bases(pg_).at(0).info, "样例");
    EXPECT_FALSE(set_kb_info(pg_, "nope", "x"));

    EXPECT_TRUE(delete_knowledge_base(pg_, "samples"));
    EXPECT_FALSE(again.is_current());
    EXPECT_FALSE(fs::exists(KbPaths{pg_}.kb_dir("samples")));
    EXPECT_TRUE(list_knowledge_bases(pg_).empty());
    EXPECT_FALSE(delete_knowledge_base(pg_, "samples"));
    EXPECT_THROW(KnowledgeBase(pg_, "samples"), DataError);
    EXPECT_FALSE(fs::exists(KbPaths{pg_}.info_db()));   // nothing went to the local store
}

// -i, kb add and kb rm decide per file as the local store does (sha256 against the store's
// catalog): the same report, the same catalog (file versions too) and the same hits after.
TEST_F(PgKb, IncrementsGiveTheLocalStoresReportCatalogAndHits) {
    rebuild(local_);
    rebuild(pg_);
    KnowledgeBase open_pg(pg_, "samples");
    UpdateOptions inc;
    inc.progress = false;
    inc.mode = UpdateMode::increment;
    auto nothing = update_knowledge_bases(pg_, inc);
    EXPECT_EQ(nothing.count("unchanged"), 6u);
    EXPECT_EQ(nothing.chunks_written, 0u);
    EXPECT_TRUE(open_pg.is_current());   // nothing changed: nothing written

    for (auto& root : {local_, pg_}) {
        const std::string content = KbPaths{root}.content_dir("samples");
        std::ofstream(content + "/常见问题.txt", std::ios::app) << "\n问：量子隧穿校准怎么做？\n答：先冷却探头。\n";
        std::ofstream(content + "/新增.md") << "# 新增\n\n固件签名校验失败时重新下载固件包。";
        fs::remove(content + "/配置参考.json");
    }
    auto check_same = [&](const UpdateReport& lr, const UpdateReport& pr, const std::string& what) {
        for (const char* action : {"added", "updated", "removed", "unchanged", "failed"})
            EXPECT_EQ(pr.count(action), lr.count(action)) << what << " " << action;
        EXPECT_EQ(pr.chunks_written, lr.chunks_written) << what;
        auto lf = list_kb_files(local_, "samples"), pf = list_kb_files(pg_, "samples");
        ASSERT_EQ(pf.size(), lf.size()) << what;
        for (size_t i = 0; i < lf.size(); ++i) {
            EXPECT_EQ(pf[i].file_name, lf[i].file_name) << what;
            EXPECT_EQ(pf[i].file_version, lf[i].file_version) << what << " " << lf[i].file_name;
            EXPECT_EQ(pf[i].docs_count, lf[i].docs_count) << what << " " << lf[i].file_name;
            EXPECT_EQ(pf[i].in_db, lf[i].in_db) << what << " " << lf[i].file_name;
        }
        KnowledgeBase lkb(local_, "samples"), pkb(pg_, "samples");
        for (const char* mode : {"bm25", "dense", "hybrid"}) {
            SearchOptions o;
            o.mode = mode;
            o.top_k = 4;
            for (const char* q : {"量子隧穿校准", "固件签名校验失败", "证书过期怎么办"})
                expect_same_hits(lkb.search(q, o), pkb.search(q, o), what + " " + mode + " " + q);
        }
    };
    UpdateReport li = update_knowledge_bases(local_, inc), pi = update_knowledge_bases(pg_, inc);
    EXPECT_EQ(pi.count("added"), 1u);
    EXPECT_EQ(pi.count("updated"), 1u);
    EXPECT_EQ(pi.count("removed"), 1u);
    check_same(li, pi, "kb -i");
    EXPECT_FALSE(open_pg.is_current());

    const std::string extra = dir_.file("附加.txt");
    std::ofstream(extra) << "附加文件：网关离线时检查 Modbus 线缆。";
    check_same(add_files(local_, "samples", {extra}, inc), add_files(pg_, "samples", {extra}, inc), "kb add");
    check_same(remove_files(local_, "samples", {"错误码.csv"}, inc), remove_files(pg_, "samples", {"错误码.csv"}, inc), "kb rm");
    EXPECT_FALSE(fs::exists(KbPaths{pg_}.content_dir("samples") + "/错误码.csv"));
}

// kb migrate --to pg and back: each KB rebuilt from content/ with its own embed_model, chunk
// sizes and kb_info; kb_settings.yaml switched; the same hits in every mode before and after.
TEST_F(PgKb, MigrateToPgAndBackKeepsKbInfoChunkingAndHits) {
    std::ofstream(local_ + "/kb_settings.yaml", std::ios::app) << "pg_connection_uri: " << dsn_ << "\n";
    UpdateOptions o;
    o.progress = false;
    o.chunk_size = 90;   // not the settings' 120: the KB's own sizes travel
    o.chunk_overlap = 10;
    update_knowledge_bases(local_, o);
    ASSERT_TRUE(set_kb_info(local_, "samples", "迁移测试"));
    auto hits_of = [&] {
        KnowledgeBase kb(local_, "samples");
        std::vector<std::vector<SearchHit>> all;
        for (const char* mode : {"bm25", "dense", "hybrid"}) {
            SearchOptions so;
            so.mode = mode;
            so.top_k = 5;
            for (auto& q : kQueries) all.push_back(kb.search(q, so));
        }
        return all;
    };
    const auto before = hits_of();
    const int64_t chunks = list_knowledge_bases(local_).at(0).chunk_count;

    EXPECT_THROW(migrate_knowledge_bases(local_, "local", {}, false), UsageError);   // already there
    EXPECT_THROW(migrate_knowledge_bases(local_, "milvus", {}, false), UsageError);
    migrate_knowledge_bases(local_, "pg", {}, false);
    EXPECT_EQ(load_kb_settings(local_).vs_type, "pg");
    auto pk = list_knowledge_bases(local_);
    ASSERT_EQ(pk.size(), 1u);
    EXPECT_EQ(pk[0].vs_type, "pg");
    EXPECT_EQ(pk[0].info, "迁移测试");
    EXPECT_EQ(pk[0].chunk_count, chunks);
    EXPECT_EQ(pk[0].chunk_size, 90);
    EXPECT_EQ(pk[0].embed_model, "hash-ngram");
    auto on_pg = hits_of();
    ASSERT_EQ(on_pg.size(), before.size());
    for (size_t i = 0; i < before.size(); ++i) expect_same_hits(before[i], on_pg[i], "on pg, query #" + std::to_string(i));

    fs::remove(KbPaths{local_}.info_db());   // back to a local store made from scratch
    migrate_knowledge_bases(local_, "local", {}, false);
    EXPECT_EQ(load_kb_settings(local_).vs_type, "faiss");
    EXPECT_EQ(list_knowledge_bases(local_).at(0).info, "迁移测试");
    auto back = hits_of();
    for (size_t i = 0; i < before.size(); ++i) expect_same_hits(before[i], back[i], "back on local, query #" + std::to_string(i));
}
