// PostgreSQL + pgvector store (pdsd/kb/pg_store.h) against the throwaway server of the
// pg_server CTest fixture (scripts/pg_test_server.sh): schema, one-transaction rebuilds,
// dense top-k vs brute-force cosine, BM25 vs the local store on the same chunks, dropping a
// KB, and the password kept out of every message. Each test works in its own PostgreSQL
// schema (search_path), so ctest -j runs them side by side. Without a server they skip
// with the fixture's reason.
#include "pdsd/core/error.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/pg_store.h"
#include "test_util.h"
#include "kb/pg_test_server.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::kb;

namespace {

using test::server;
using test::sql_value;

class PgStoreTest : public test::PgSchemaTest {
protected:
    std::unique_ptr<PgStore> open() {
        auto s = std::make_unique<PgStore>(dsn_);
        s->ensure_schema();
        return s;
    }
};

PgChunk chunk(const std::string& file, int64_t index, const std::string& text, std::vector<float> embedding = {}) {
    PgChunk c;
    c.file_name = file;
    c.chunk_index = index;
    c.text = text;
    c.end_char = static_cast<int64_t>(text.size());
    c.embedding = std::move(embedding);
    return c;
}

PgKbContent content(const std::string& kb, int64_t dim, std::vector<PgChunk> chunks) {
    PgKbContent c;
    c.kb_name = kb;
    c.dim = dim;
    c.embed_model = dim ? "test-vectors" : "none";
    c.chunks = std::move(chunks);
    PgFile f;
    f.file_name = "a.txt";
    f.file_ext = ".txt";
    f.document_loader_name = "TextLoader";
    f.docs_count = static_cast<int64_t>(c.chunks.size());
    c.files = {f};
    return c;
}

std::vector<std::string> texts_of(const std::vector<SearchHit>& hits) {
    std::vector<std::string> v;
    for (auto& h : hits) v.push_back(h.text);
    return v;
}

// Index root/knowledge_base/<kb>/content with the local store (BM25 only, chunk_size / overlap
// given) and return its chunks, in id order, as the PostgreSQL store's content.
PgKbContent index_locally(const std::string& root, const std::string& kb, int64_t chunk_size, int64_t chunk_overlap) {
    UpdateOptions uo;
    uo.kb_names = {kb};
    uo.embed_model = "none";
    uo.chunk_size = chunk_size;
    uo.chunk_overlap = chunk_overlap;
    uo.progress = false;
    update_knowledge_bases(root, uo);
    PgKbContent pc;
    pc.kb_name = kb;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2((root + "/knowledge_base/info.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT file_name, chunk_index, text, start_char, end_char FROM chunks WHERE kb_name = ? ORDER BY id",
                                 -1, &st, nullptr), SQLITE_OK);
    sqlite3_bind_text(st, 1, kb.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
        PgChunk c = chunk(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), sqlite3_column_int64(st, 1),
                          reinterpret_cast<const char*>(sqlite3_column_text(st, 2)));
        c.start_char = sqlite3_column_int64(st, 3);
        c.end_char = sqlite3_column_int64(st, 4);
        pc.chunks.push_back(c);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return pc;
}

}  // namespace

// ---- settings (no server needed) ------------------------------------------------------

TEST(PgSettings, DsnComesFromSettingsWithoutPassword) {
    KbSettings s;
    s.vs_type = "pg";
    EXPECT_THROW(pg_dsn_from_settings(s, "kb_settings.yaml"), ConfigError);   // no URI
    s.pg_connection_uri = "postgresql://pdsd@db.example:5432/kb";
    EXPECT_EQ(pg_dsn_from_settings(s, "kb_settings.yaml"), s.pg_connection_uri);
    s.pg_connection_uri = "postgresql://pdsd:Hunter2Secret@db.example:5432/kb";
    try {
        pg_dsn_from_settings(s, "kb_settings.yaml");
        FAIL() << "a password in kb_settings.yaml must be refused";
    } catch (const ConfigError& e) {
        std::string m = e.what();
        EXPECT_EQ(m.find("Hunter2Secret"), std::string::npos) << m;
        EXPECT_NE(m.find("pg_connection_uri"), std::string::npos) << m;
        EXPECT_NE(m.find("PGPASSWORD"), std::string::npos) << m;
    }
    s.pg_connection_uri = "postgresql://pdsd:Hunter2Secret@db.example:5432/kb?no_such_option=1";
    try {
        pg_dsn_from_settings(s, "kb_settings.yaml");
        FAIL() << "an unknown option must be refused";
    } catch (const ConfigError& e) {
        EXPECT_EQ(std::string(e.what()).find("Hunter2Secret"), std::string::npos) << e.what();
    }
}

TEST(PgSettings, VsTypeIsCheckedAndPgNeverFallsBackToTheLocalStore) {
    test::TempDir root;
    std::ofstream(root.file("kb_settings.yaml")) << "vs_type: milvus\n";
    EXPECT_THROW(load_kb_settings(root.str()), ConfigError);
    // Nothing listens on port 1: the rebuild fails naming the server (or, without libpq,
    // that this build has no PostgreSQL store), and builds no local store instead.
    std::ofstream(root.file("kb_settings.yaml")) << "vs_type: pg\npg_connection_uri: postgresql://pdsd@127.0.0.1:1/kb\n";
    EXPECT_EQ(load_kb_settings(root.str()).vs_type, "pg");
    fs::create_directories(root.file("knowledge_base/k/content"));
    std::ofstream(root.file("knowledge_base/k/content/a.txt")) << "安装 pdsd";
    UpdateOptions o;
    o.kb_names = {"k"};
    o.progress = false;
    try {
        update_knowledge_bases(root.str(), o);
        FAIL() << "vs_type pg must not quietly build the local store";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find(pg_store_available() ? "PostgreSQL host 127.0.0.1 port 1" : "libpq"), std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(KbPaths{root.str()}.info_db()));
    EXPECT_THROW(KnowledgeBase(root.str(), "k"), Error);
}

// ---- against the server -----------------------------------------------------------------

TEST_F(PgStoreTest, SchemaCreateIsIdempotent) {
    auto count_tables = [&] {
        return sql_value(server().dsn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = '" + schema_ +
                                           "' AND table_name IN ('knowledge_base', 'knowledge_file', 'kb_chunks', 'kb_terms', "
                                           "'kb_postings', 'pdsd_meta')");
    };
    EXPECT_EQ(count_tables(), "0");
    // Four connections make it at once (replicas starting together), then once more.
    std::vector<std::thread> threads;
    std::vector<std::string> errors(4);
    for (size_t i = 0; i < 4; ++i)
        threads.emplace_back([&, i] {
            try {
                PgStore(dsn_).ensure_schema();
            } catch (const std::exception& e) {
                errors[i] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (auto& e : errors) EXPECT_EQ(e, "");
    EXPECT_EQ(count_tables(), "6");
    auto store = open();
    store->ensure_schema();
    EXPECT_EQ(count_tables(), "6");
    EXPECT_EQ(sql_value(server().dsn, "SELECT value FROM " + schema_ + ".pdsd_meta WHERE key = 'schema_version'"), "1");
    // Chatchat's knowledge_file columns are all there.
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM information_schema.columns WHERE table_schema = '" + schema_ +
                                          "' AND table_name = 'knowledge_file' AND column_name IN ('id', 'file_name', 'file_ext', "
                                          "'kb_name', 'document_loader_name', 'text_splitter_name', 'file_version', 'file_mtime', "
                                          "'file_size', 'custom_docs', 'docs_count', 'create_time')"),
              "12");
}

TEST_F(PgStoreTest, RebuildIsOneTransaction) {
    auto store = open();
    store->rebuild_kb(content("kb1", 3, {chunk("a.txt", 0, "旧的安装说明 alpha", {1, 0, 0}), chunk("a.txt", 1, "旧的证书 beta", {0, 1, 0})}));
    auto before = store->kb_info("kb1");
    ASSERT_TRUE(before);
    EXPECT_EQ(before->chunk_count, 2);
    EXPECT_EQ(before->generation, 1);
    EXPECT_EQ(before->vs_type, "pg");
    EXPECT_EQ(before->file_count, 1);

    // The last write of the rebuild (the vectors) fails: pgvector refuses NaN.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto bad_vectors = content("kb1", 3, {chunk("a.txt", 0, "新的 gamma", {1, 1, 0}), chunk("a.txt", 1, "新的 delta", {nan, 0, 0})});
    EXPECT_THROW(store->rebuild_kb(bad_vectors), IoError);
    // The chunk COPY fails (a text PostgreSQL rejects: invalid UTF-8).
    auto bad_text = content("kb1", 3, {chunk("a.txt", 0, "新的 gamma", {1, 1, 0}), chunk("a.txt", 1, "bad \xff\xfe bytes", {0, 0, 1})});
    EXPECT_THROW(store->rebuild_kb(bad_text), IoError);
    // A vector of the wrong width is caught before anything is written.
    EXPECT_THROW(store->rebuild_kb(content("kb1", 3, {chunk("a.txt", 0, "x", {1, 0})})), DataError);

    // The store (same connection: the failed transactions were rolled back) still has the old KB.
    auto after = store->kb_info("kb1");
    ASSERT_TRUE(after);
    EXPECT_EQ(after->generation, 1);
    EXPECT_EQ(after->chunk_count, 2);
    EXPECT_EQ(texts_of(store->bm25_top_k("kb1", "alpha", 5)), std::vector<std::string>{"旧的安装说明 alpha"});
    EXPECT_TRUE(store->bm25_top_k("kb1", "gamma", 5).empty());
    auto dense = store->dense_top_k("kb1", {0, 1, 0}, 1);
    ASSERT_EQ(dense.size(), 1u);
    EXPECT_EQ(dense[0].text, "旧的证书 beta");
    // ... and so does a second connection.
    PgStore other(dsn_);
    EXPECT_EQ(other.kb_info("kb1")->chunk_count, 2);

    // A good rebuild replaces everything (nothing of the old KB is left), generation + 1,
    // and may change the vector width.
    store->rebuild_kb(content("kb1", 2, {chunk("a.txt", 0, "新的 gamma", {1, 1})}));
    auto now = store->kb_info("kb1");
    EXPECT_EQ(now->generation, 2);
    EXPECT_EQ(now->chunk_count, 1);
    EXPECT_EQ(now->dim, 2);
    EXPECT_TRUE(store->bm25_top_k("kb1", "alpha", 5).empty());
    EXPECT_EQ(texts_of(other.bm25_top_k("kb1", "gamma", 5)), std::vector<std::string>{"新的 gamma"});
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM " + schema_ + ".kb_chunks"), "1");
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM " + schema_ + "." + now->vectors_table), "1");
    // The vector tables of this and the previous generation stay (a reader that began before
    // the last commit still reads the previous one); older ones are dropped.
    store->rebuild_kb(content("kb1", 2, {chunk("a.txt", 0, "新的 gamma", {1, 1})}));
    EXPECT_EQ(sql_value(server().dsn, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = '" +
                                          schema_ + "' AND tablename LIKE 'kb\\_vectors\\_%'"),
              "kb_vectors_" + std::to_string(now->id) + "_2,kb_vectors_" + std::to_string(now->id) + "_3");
    // BM25 only: no vectors, dense refused with a message.
    store->rebuild_kb(content("kb1", 0, {chunk("a.txt", 0, "只有 BM25")}));
    EXPECT_THROW(store->dense_top_k("kb1", {1, 0}, 1), UsageError);
    EXPECT_EQ(texts_of(store->bm25_top_k("kb1", "bm25", 5)), std::vector<std::string>{"只有 BM25"});
}

// kill -9 of a process in the middle of a rebuild (its postings COPY): the KB stays as it was,
// searches from another connection meanwhile answer at once with the old KB, and the next
// rebuild completes.
TEST_F(PgStoreTest, KilledRebuildLosesNothingAndBlocksNoSearch) {
    auto store = open();
    store->rebuild_kb(content("kb", 2, {chunk("a.txt", 0, "旧的 安装 说明", {1, 0}), chunk("a.txt", 1, "旧的 证书", {0, 1})}));
    const auto before = *store->kb_info("kb");
    std::vector<PgChunk> big;
    std::mt19937 rng(3);
    const std::string han = "安装配置证书密码管理员日志升级失败服务网络端口数据备份恢复权限用户";
    for (int i = 0; i < 3000; ++i) {
        std::string t;
        for (int j = 0; j < 250; ++j) t += han.substr(3 * (rng() % (han.size() / 3)), 3);
        big.push_back(chunk("big.txt", i, t, {float(rng() % 7) + 1, 1}));
    }
    const std::string writer = "pdsd_writer_" + std::to_string(::getpid());   // its connection's application_name
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {   // the writer: its own connection, killed before it commits
        try {
            PgStore(dsn_ + "&application_name=" + writer).rebuild_kb(content("kb", 2, big));
        } catch (...) {
        }
        ::_exit(0);
    }
    const std::string active = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + writer +
                               "' AND state = 'active' AND query LIKE 'COPY kb_postings%'";
    bool copying = false;
    for (int i = 0; i < 3000 && !copying; ++i) {
        copying = sql_value(server().dsn, active) == "1";
        if (!copying) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(copying) << "the writer's postings COPY was not seen";
    auto t0 = std::chrono::steady_clock::now();
    auto during = store->bm25_top_k("kb", "安装", 5);
    auto dense = store->dense_top_k("kb", {1, 0}, 1);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer finished before it was killed";
    EXPECT_EQ(texts_of(during), std::vector<std::string>{"旧的 安装 说明"});
    ASSERT_EQ(dense.size(), 1u);
    EXPECT_EQ(dense[0].text, "旧的 安装 说明");
    EXPECT_LT(ms, 2000) << "searches waited for the rebuild";
    // The server rolls the dead client's transaction back.
    const std::string connected = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + writer + "'";
    for (int i = 0; i < 1000 && sql_value(server().dsn, connected) != "0"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(sql_value(server().dsn, connected), "0");
    const auto after = *store->kb_info("kb");
    EXPECT_EQ(after.generation, before.generation);
    EXPECT_EQ(after.chunk_count, 2);
    EXPECT_EQ(after.vectors_table, before.vectors_table);
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM " + schema_ + ".kb_chunks"), "2");
    store->rebuild_kb(content("kb", 2, big));   // the rerun completes
    EXPECT_EQ(store->kb_info("kb")->chunk_count, 3000);
    EXPECT_EQ(store->bm25_top_k("kb", "旧的", 5).size(), 0u);
}

TEST_F(PgStoreTest, DenseTopKEqualsBruteForceCosine) {
    constexpr size_t n = 500, d = 32, k = 10;
    std::mt19937 rng(7);
    std::normal_distribution<float> g;
    std::vector<PgChunk> chunks;
    for (size_t i = 0; i < n; ++i) {
        std::vector<float> v(d);
        for (auto& x : v) x = g(rng);
        chunks.push_back(chunk("a.txt", static_cast<int64_t>(i), "chunk " + std::to_string(i), v));
    }
    auto store = open();
    store->rebuild_kb(content("dense", d, chunks));
    const std::string vt = store->kb_info("dense")->vectors_table;
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM pg_indexes WHERE schemaname = '" + schema_ +
                                          "' AND indexdef LIKE '%hnsw%vector_cosine_ops%' AND tablename = '" + vt + "'"), "1");

    auto cosine = [](const std::vector<float>& a, const std::vector<float>& b) {
        double dot = 0, na = 0, nb = 0;
        for (size_t i = 0; i < a.size(); ++i) dot += double(a[i]) * b[i], na += double(a[i]) * a[i], nb += double(b[i]) * b[i];
        return dot / std::sqrt(na * nb);
    };
    for (int q = 0; q < 5; ++q) {
        std::vector<float> query(d);
        for (auto& x : query) x = g(rng);
        std::vector<std::pair<double, int64_t>> brute;
        for (size_t i = 0; i < n; ++i) brute.push_back({cosine(query, chunks[i].embedding), static_cast<int64_t>(i)});
        std::sort(brute.begin(), brute.end(), [](auto& a, auto& b) { return a.first > b.first; });
        PgSearchOptions hnsw, exact;
        hnsw.hnsw_ef_search = 500;   // the whole graph: HNSW's answer is the exact one here
        exact.exact = true;
        for (auto* o : {&hnsw, &exact}) {
            auto hits = store->dense_top_k("dense", query, k, *o);
            ASSERT_EQ(hits.size(), k);
            for (size_t r = 0; r < k; ++r) {
                // pgvector sums in float: scores agree to ~1e-6; equal ranks unless two are that close.
                EXPECT_NEAR(hits[r].score, brute[r].first, 1e-5) << "query " << q << " rank " << r;
                const bool tie = std::abs(brute[r].first - brute[r + 1].first) <= 1e-5 ||
                                 (r > 0 && std::abs(brute[r].first - brute[r - 1].first) <= 1e-5);
                if (!tie) {
                    EXPECT_EQ(hits[r].chunk_index, brute[r].second) << "query " << q << " rank " << r;
                }
                EXPECT_EQ(*hits[r].dense_rank, r + 1);
                EXPECT_EQ(*hits[r].cosine, hits[r].score);
            }
        }
    }
    // The default candidate list still returns k hits (ef_search is raised to k).
    PgSearchOptions small;
    small.hnsw_ef_search = 5;
    EXPECT_EQ(store->dense_top_k("dense", chunks[3].embedding, 50, small).size(), 50u);
    EXPECT_EQ(store->dense_top_k("dense", chunks[3].embedding, 1)[0].chunk_index, 3);
    EXPECT_THROW(store->dense_top_k("dense", {1, 2, 3}, 1), UsageError);   // wrong width
}

TEST_F(PgStoreTest, Bm25ScoresEqualTheLocalStore) {
    // The shipped samples (Chinese .md/.txt/.html/.docx/.json/.csv) plus an English file,
    // indexed by the local store; the same chunks written to PostgreSQL.
    test::TempDir root;
    const std::string content_dir = root.file("knowledge_base/samples/content");
    fs::create_directories(content_dir);
    for (auto& e : fs::directory_iterator(test::source_dir() + "/share/samples")) fs::copy_file(e.path(), content_dir + "/" + e.path().filename().string());
    std::ofstream(content_dir + "/notes.txt")
        << "Installing pdsd: run the setup script, then build the knowledge base.\n\n"
           "Certificates expire after one year; renew the certificate before it expires.\n\n"
           "The admin password can be reset from the console. Password resets are logged.\n\n"
           // Where pdsd's terms and FTS5's unicode61 tokens differ (bm25.h, fts5_tokens):
           // '_' inside a word, Cyrillic capitals, the katakana middle dot.
           "Set max_connections and queue_limit. ПАРОЛЬ сервера: пароль. カタ・カナ.\n";
    PgKbContent pc = index_locally(root.str(), "samples", 120, 20);
    ASSERT_GT(pc.chunks.size(), 30u);
    auto store = open();
    store->rebuild_kb(pc);

    KnowledgeBase local(root.str(), "samples");
    const std::vector<std::string> queries = {"忘记管理员密码怎么办", "证书过期", "安装", "错误码 E1001", "配置文件在哪里",
                                              "password reset", "certificate expires", "the", "发布说明 版本", "没有的词 zzzz",
                                              "connections limit", "пароль сервера", "カナ"};
    size_t compared = 0;
    for (auto& q : queries) {
        auto pg = store->bm25_top_k("samples", q, 50);
        for (const char* scorer : {"postings", "fts5"}) {
            SearchOptions so;
            so.mode = "bm25";
            so.top_k = 50;
            so.candidates = 50;
            so.score_threshold = 0.0;
            so.bm25_scorer = scorer;
            auto lh = local.search(q, so);
            ASSERT_EQ(pg.size(), lh.size()) << q << " (" << scorer << ")";
            for (size_t i = 0; i < lh.size(); ++i) {
                // Same chunk at each rank (the postings scorer and PostgreSQL break ties by
                // chunk id, given in the same order); FTS5's own ranking orders ties its way.
                auto it = std::find_if(pg.begin(), pg.end(), [&](const SearchHit& h) {
                    return h.file_name == lh[i].file_name && h.chunk_index == lh[i].chunk_index;
                });
                ASSERT_NE(it, pg.end()) << q << ": " << lh[i].file_name << "#" << lh[i].chunk_index << " not in PostgreSQL's list";
                EXPECT_NEAR(it->score, lh[i].score, 1e-6 * std::abs(lh[i].score)) << q << " (" << scorer << ") rank " << i;
                EXPECT_EQ(*it->bm25, it->score);
                if (std::string(scorer) == "postings") {
                    EXPECT_EQ(pg[i].file_name, lh[i].file_name) << q << " rank " << i;
                    EXPECT_EQ(pg[i].chunk_index, lh[i].chunk_index) << q << " rank " << i;
                    EXPECT_EQ(pg[i].text, lh[i].text);
                }
                ++compared;
            }
        }
    }
    EXPECT_GT(compared, 100u);
    EXPECT_TRUE(store->bm25_top_k("samples", "没有的词 zzzz", 5).empty());
    EXPECT_EQ(store->bm25_top_k("samples", "证书过期", 3).size(), 3u);
}

// From 20 000 chunks both stores drop common query terms (bm25.h keep_query_terms) and the
// local store scores from its postings: same lists, same scores.
TEST_F(PgStoreTest, Bm25OfALargeKbPrunesLikeTheLocalStore) {
    test::TempDir root;
    const std::string content_dir = root.file("knowledge_base/big/content");
    fs::create_directories(content_dir);
    // 40 000 short sentences (> 20 000 chunks of 40 characters): common words (in most chunks) and rare ones.
    std::mt19937 rng(11);
    const std::vector<std::string> common = {"系统", "用户", "配置", "server"}, rare = {"证书", "密码", "备份", "端口", "日志", "升级", "quota", "token"};
    std::ofstream f(content_dir + "/big.txt");
    for (int i = 0; i < 40000; ++i) {
        f << common[rng() % common.size()] << common[rng() % common.size()];
        for (int j = 0; j < 3; ++j) f << (rng() % 50 == 0 ? rare[rng() % rare.size()] + std::to_string(rng() % 40) : common[rng() % common.size()]);
        f << "。\n\n";
    }
    f.close();
    PgKbContent pc = index_locally(root.str(), "big", 40, 0);
    ASSERT_GE(pc.chunks.size(), 20000u);
    auto store = open();
    store->rebuild_kb(pc);

    KnowledgeBase local(root.str(), "big");
    for (const std::string q : {"系统 证书", "用户配置 密码 quota", "server 日志 升级", "系统用户"}) {
        SearchOptions so;
        so.mode = "bm25";
        so.top_k = 30;
        so.candidates = 30;
        so.score_threshold = 0.0;   // bm25_scorer auto: postings at this size, with pruning
        auto lh = local.search(q, so);
        auto pg = store->bm25_top_k("big", q, 30);
        ASSERT_EQ(pg.size(), lh.size()) << q;
        ASSERT_FALSE(pg.empty()) << q;
        for (size_t i = 0; i < lh.size(); ++i) {
            EXPECT_EQ(pg[i].chunk_index, lh[i].chunk_index) << q << " rank " << i;
            EXPECT_NEAR(pg[i].score, lh[i].score, 1e-6 * std::abs(lh[i].score)) << q << " rank " << i;
        }
    }
    // Only the common terms: pruning keeps the rarest of them, in both stores.
    PgSearchOptions no_prune;
    no_prune.bm25_prune_df_ratio = 1.0;
    EXPECT_NE(store->bm25_top_k("big", "系统用户", 5, no_prune)[0].score, store->bm25_top_k("big", "系统用户", 5)[0].score);
}

TEST_F(PgStoreTest, DropKb) {
    auto store = open();
    store->rebuild_kb(content("gone", 2, {chunk("a.txt", 0, "删除我", {1, 0})}));
    store->rebuild_kb(content("kept", 0, {chunk("a.txt", 0, "留下 删除")}));
    store->rebuild_kb(content("gone", 2, {chunk("a.txt", 0, "删除我", {0, 1})}));   // two vector tables now
    const std::string id = std::to_string(store->kb_info("gone")->id);
    EXPECT_TRUE(store->drop_kb("gone"));
    EXPECT_FALSE(store->kb_info("gone"));
    EXPECT_FALSE(store->drop_kb("gone"));
    EXPECT_THROW(store->bm25_top_k("gone", "删除", 3), DataError);
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = '" + schema_ + "' AND table_name LIKE 'kb\\_vectors\\_" + id + "\\_%'"), "0");
    for (const char* t : {"kb_chunks", "kb_terms", "kb_postings"})
        EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM " + schema_ + "." + t + " WHERE kb_id = " + id), "0") << t;
    EXPECT_EQ(sql_value(server().dsn, "SELECT count(*) FROM " + schema_ + ".knowledge_file WHERE kb_name = 'gone'"), "0");
    EXPECT_EQ(texts_of(store->bm25_top_k("kept", "删除", 3)), std::vector<std::string>{"留下 删除"});
}

TEST_F(PgStoreTest, PasswordNeverInErrors) {
    const std::string port = server().dsn.substr(server().dsn.rfind(':') + 1, server().dsn.rfind('/') - server().dsn.rfind(':') - 1);
    auto message_of = [](const std::string& dsn) {
        try {
            PgStore s(dsn);
        } catch (const IoError& e) {
            return std::string(e.what());
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
        return std::string("connected");
    };
    // A wrong $PGPASSWORD.
    const std::string wrong = "WrongPw-91731-zz";
    ::setenv("PGPASSWORD", wrong.c_str(), 1);
    std::string m = message_of(dsn_);
    ::setenv("PGPASSWORD", server().password.c_str(), 1);
    EXPECT_EQ(m.find(wrong), std::string::npos) << m;
    EXPECT_NE(m.find("host 127.0.0.1"), std::string::npos) << m;
    EXPECT_NE(m.find("port " + port), std::string::npos) << m;
    EXPECT_NE(m.find("database postgres"), std::string::npos) << m;
    EXPECT_NE(m.find("PGPASSWORD"), std::string::npos) << m;   // the hint
    // The right password in the DSN, a database that does not exist.
    m = message_of("postgresql://postgres:" + server().password + "@127.0.0.1:" + port + "/no_such_db");
    EXPECT_EQ(m.find(server().password), std::string::npos) << m;
    EXPECT_NE(m.find("database no_such_db"), std::string::npos) << m;
    // No server there: the password still stays out.
    m = message_of("postgresql://postgres:" + server().password + "@127.0.0.1:1/x");
    EXPECT_EQ(m.find(server().password), std::string::npos) << m;
    EXPECT_NE(m.find("cannot connect"), std::string::npos) << m;
    // A statement error on a good connection names the server, not the password.
    auto store = open();
    try {
        store->bm25_top_k("nope", "x", 1);
        FAIL();
    } catch (const DataError& e) {
        EXPECT_EQ(std::string(e.what()).find(server().password), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("database postgres"), std::string::npos) << e.what();
    }
}
