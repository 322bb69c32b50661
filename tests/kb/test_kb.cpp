// Knowledge base: loaders, encodings, the Chatchat splitter port, the SQLite store
// (transactions, incremental update by sha256), BM25 on Chinese, dense + hybrid with
// the deterministic hash-ngram embedder, paths and the progress reporter.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/progress.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/kb/eval.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/loader.h"
#include "pdsd/kb/splitter.h"
#include "pdsd/kb/text.h"
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <fstream>

#include <faiss/IndexFlat.h>
#include <faiss/index_io.h>

#include <iconv.h>
#include <unistd.h>
#include <zip.h>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::kb;

namespace {
void write(const std::string& path, const std::string& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
}
std::string to_gbk(const std::string& utf8) {
    iconv_t cd = iconv_open("GBK", "UTF-8");
    std::string out(utf8.size() * 2, '\0');
    char* in = const_cast<char*>(utf8.data());
    size_t il = utf8.size(), ol = out.size();
    char* o = out.data();
    iconv(cd, &in, &il, &o, &ol);
    iconv_close(cd);
    out.resize(out.size() - ol);
    return out;
}
std::vector<std::string> texts(const std::vector<TextChunk>& c) {
    std::vector<std::string> v;
    for (auto& x : c) v.push_back(x.text);
    return v;
}
UpdateOptions quiet(UpdateMode m, const std::string& embed = "none") {
    UpdateOptions o;
    o.mode = m;
    o.progress = false;
    o.embed_model = embed;
    return o;
}
}  // namespace

// ---- text / encodings ----------------------------------------------------------

TEST(KbText, DecodesUtf8WithBomAndGbk) {
    std::string enc;
    EXPECT_EQ(decode_text("\xEF\xBB\xBF" "安装", &enc), "安装");
    EXPECT_EQ(enc, "utf-8");
    std::string gbk = to_gbk("星河数据网关安装指南");
    ASSERT_FALSE(is_valid_utf8(gbk));
    EXPECT_EQ(decode_text(gbk, &enc), "星河数据网关安装指南");
    EXPECT_EQ(enc, "gb18030");
    EXPECT_EQ(utf8_length("a安装"), 3u);
}

TEST(KbText, Bm25TermsSplitCjkIntoCharsAndBigrams) {
    EXPECT_EQ(bm25_terms("安装XHG服务", false),
              (std::vector<std::string>{"安", "装", "安装", "xhg", "服", "务", "服务"}));
    // Queries use bigrams of CJK runs (a lone char stays a unigram).
    EXPECT_EQ(bm25_terms("重置密码 和 Qwen2.5", true), (std::vector<std::string>{"重置", "置密", "密码", "和", "qwen2", "5"}));
    EXPECT_EQ(count_terms("安装 XHG"), 3u);
}

// ---- loaders -------------------------------------------------------------------

TEST(KbLoader, SkipsTempAndHiddenNames) {
    for (auto n : {"temp1.txt", "tmp.md", ".hidden.txt", "~$doc.docx"}) EXPECT_TRUE(is_skipped_name(n)) << n;
    EXPECT_FALSE(is_skipped_name("安装指南.md"));
    EXPECT_FALSE(is_skipped_name("Temp.txt"));   // Chatchat's check is case-sensitive
}

TEST(KbLoader, HtmlDropsScriptsStylesAndDecodesEntities) {
    std::string t = html_to_text("<html><head><style>p{color:red}</style><script>var a='<p>';</script></head>"
                                 "<body><h1>标题</h1><p>A &amp; B &lt;x&gt; &#20013;&#x6587;</p><!-- c --></body></html>");
    EXPECT_EQ(t, "标题\n\nA & B <x> 中文");   // block elements become paragraphs
}

TEST(KbLoader, CsvRowsAreUnsplitColumnValueDocs) {
    auto lf = load_bytes("e.csv", "code,desc\nE1,\"a, \"\"quoted\"\"\nline\"\nE2,plain\n");
    ASSERT_EQ(lf.docs.size(), 2u);
    EXPECT_EQ(lf.docs[0].text, "code: E1\ndesc: a, \"quoted\"\nline");
    EXPECT_FALSE(lf.docs[0].split);
    EXPECT_EQ(lf.loader, "CSVLoader");
}

TEST(KbLoader, JsonAndJsonlGiveValueText) {
    auto j = load_bytes("c.json", R"({"名称": "queue_dir", "n": 5, "list": [{"说明": "目录"}], "x": null})");
    // nlohmann orders object keys; null values are skipped.
    EXPECT_EQ(j.docs.at(0).text, "说明: 目录\nn: 5\n名称: queue_dir");
    auto l = load_bytes("c.jsonl", "{\"q\": \"问\"}\n\n{\"q\": \"答\"}\n");
    EXPECT_EQ(l.docs.at(0).text, "q: 问\n\nq: 答");
    EXPECT_THROW(load_bytes("bad.json", "{oops"), DataError);
}

TEST(KbLoader, UnsupportedExtensionIsDataError) {
    EXPECT_THROW(load_bytes("a.exe", "x"), DataError);
    EXPECT_EQ(file_extension("A/B.MD"), ".md");
}

TEST(KbLoader, GbkTextFileIsConverted) {
    test::TempDir d;
    write(d.file("g.txt"), to_gbk("问：网关支持哪些协议？"));
    auto lf = load_file(d.file("g.txt"));
    EXPECT_EQ(lf.encoding, "gb18030");
    EXPECT_EQ(lf.docs.at(0).text, "问：网关支持哪些协议？");
}

// ---- splitter (Chatchat semantics; the oracle test covers random texts) ---------

TEST(KbSplitter, ShortTextIsOneStrippedChunk) {
    auto c = split_text("  你好。世界！\n\n\n再见  ");
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].text, "你好。世界！\n再见");   // \n{2,} -> \n
    EXPECT_EQ(c[0].start, 2u);
    EXPECT_EQ(c[0].end, 13u);
}

TEST(KbSplitter, SeparatorStaysAtTheEndOfThePiece) {
    // chunk_size 6: "甲乙丙。" (4) + "丁戊己。" (4) do not fit together.
    EXPECT_EQ(texts(split_text("甲乙丙。丁戊己。", {6, 0})), (std::vector<std::string>{"甲乙丙。", "丁戊己。"}));
}

TEST(KbSplitter, OverlapIsWholePieces) {
    // pieces "一二。"(3) "三四。"(3) "五六。"(3), size 7 overlap 3: the last piece repeats.
    EXPECT_EQ(texts(split_text("一二。三四。五六。", {7, 3})),
              (std::vector<std::string>{"一二。三四。", "三四。五六。"}));
}

TEST(KbSplitter, OversizePieceWithoutSeparatorsIsEmittedWhole) {
    std::string s(30, 'x');
    auto c = split_text(s, {10, 0});
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].text, s);
}

TEST(KbSplitter, QaPairsAreMergedLikeChatchat) {
    // Chatchat #3680: short Q&A pairs end up in one chunk (kept for compatibility;
    // documented in docs/knowledge_base.md).
    std::string faq = "问：如何重置密码？\n答：执行 reset-password。\n\n问：支持哪些协议？\n答：Modbus 与 MQTT。";
    auto c = split_text(faq);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_NE(c[0].text.find("重置密码"), std::string::npos);
    EXPECT_NE(c[0].text.find("MQTT"), std::string::npos);
    // With chunk_size 40 the pairs separate at the blank line (values from Chatchat's code).
    auto small = split_text(faq, {40, 0});
    ASSERT_EQ(small.size(), 2u);
    EXPECT_EQ(small[0].text, "问：如何重置密码？\n答：执行 reset-password。");
    EXPECT_EQ(small[1].text, "问：支持哪些协议？\n答：Modbus 与 MQTT。");
}

TEST(KbSplitter, OverlapLargerThanSizeIsUsageError) {
    EXPECT_THROW(split_text("x", {10, 11}), UsageError);
}

// ---- store, incremental updates, search -----------------------------------------

class KbStore : public ::testing::Test {
protected:
    test::TempDir dir;
    std::string root;
    std::string content;
    void SetUp() override {
        root = dir.str();
        content = KbPaths{root}.content_dir("t");
        write(content + "/安装.md", "# 安装\n\n运行 xhg-setup 初始化脚本，然后启动服务。");
        write(content + "/问答.txt", "问：忘记管理员密码怎么办？\n答：执行 xhg-admin reset-password 重置。");
        write(content + "/错误.csv", "错误码,含义\nE2003,证书过期\nE1001,连接超时\n");
        write(content + "/tmp_ignored.txt", "临时文件不应被索引");
    }
};

TEST_F(KbStore, RecreateIndexesFolderAndBm25FindsChineseChunk) {
    auto r = update_knowledge_bases(root, quiet(UpdateMode::recreate));
    EXPECT_EQ(r.count("added"), 3u);
    EXPECT_EQ(r.chunks_written, 4u);   // md 1, txt 1, csv 2 rows
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    auto hits = kb.search("管理员密码忘了", o);
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "问答.txt");
    EXPECT_GT(hits[0].score, 0);
    hits = kb.search("证书过期", o);
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "错误.csv");
    EXPECT_NE(hits[0].text.find("E2003"), std::string::npos);
    EXPECT_TRUE(kb.search("完全无关的词汇", o).empty() || kb.search("完全无关的词汇", o)[0].score > 0);
    // Layout
    EXPECT_TRUE(fs::exists(KbPaths{root}.info_db()));
    EXPECT_FALSE(fs::exists(fs::path(KbPaths{root}.kb_dir("t")) / "vector_store"));
}

TEST_F(KbStore, IncrementReindexesExactlyChangedAddedAndDeleted) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    auto same = update_knowledge_bases(root, quiet(UpdateMode::increment));
    EXPECT_EQ(same.count("unchanged"), 3u);
    EXPECT_EQ(same.chunks_written, 0u);

    write(content + "/安装.md", "# 安装\n\n新版本使用 xhg-install 命令。");   // changed content
    write(content + "/新增.txt", "新增文件：升级说明。");                     // added
    fs::remove(content + "/错误.csv");                                       // deleted
    // Same content, new mtime: not re-indexed (hash decides, not mtime).
    std::string qa = read_file(content + "/问答.txt");
    write(content + "/问答.txt", qa);
    auto r = update_knowledge_bases(root, quiet(UpdateMode::increment));
    std::map<std::string, std::string> actions;
    for (auto& f : r.files) actions[f.file] = f.action;
    EXPECT_EQ(actions["安装.md"], "updated");
    EXPECT_EQ(actions["新增.txt"], "added");
    EXPECT_EQ(actions["错误.csv"], "removed");
    EXPECT_EQ(actions["问答.txt"], "unchanged");
    EXPECT_EQ(actions.size(), 4u);

    KnowledgeBase kb(root, "t");
    EXPECT_EQ(kb.chunk_count(), 3);
    SearchOptions o;
    EXPECT_TRUE(kb.search("证书过期", o).empty());
    auto h = kb.search("xhg-install", o);
    ASSERT_FALSE(h.empty());
    EXPECT_EQ(h[0].file_name, "安装.md");
    EXPECT_TRUE(kb.search("初始化脚本", o).empty());   // old text gone from FTS too
}

TEST_F(KbStore, AddAndRemoveFiles) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    write(dir.file("extra/发布.html"), "<p>3.2 版本新增 OPC UA 订阅。</p>");
    auto r = add_files(root, "t", {dir.file("extra/发布.html")}, quiet(UpdateMode::increment));
    EXPECT_EQ(r.count("added"), 1u);
    EXPECT_EQ(r.count("unchanged"), 0u);   // add touches only the named files
    EXPECT_TRUE(fs::exists(content + "/发布.html"));
    KnowledgeBase kb(root, "t");
    EXPECT_EQ(kb.search("OPC 订阅", SearchOptions{}).at(0).file_name, "发布.html");
    auto rm = remove_files(root, "t", {"发布.html"}, quiet(UpdateMode::increment));
    EXPECT_EQ(rm.count("removed"), 1u);
    EXPECT_FALSE(fs::exists(content + "/发布.html"));
    EXPECT_THROW(remove_files(root, "t", {"../x"}, quiet(UpdateMode::increment)), UsageError);
}

TEST_F(KbStore, FailedRebuildRollsBackTheWholeTransaction) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    KnowledgeBase before(root, "t");
    int64_t n = before.chunk_count();
    // chunk_overlap > chunk_size fails before anything is written; an unknown embedder
    // fails before the transaction; a malformed json file is reported, not fatal.
    UpdateOptions bad = quiet(UpdateMode::recreate);
    bad.chunk_size = 10;
    bad.chunk_overlap = 20;
    EXPECT_THROW(update_knowledge_bases(root, bad), UsageError);
    EXPECT_THROW(update_knowledge_bases(root, quiet(UpdateMode::recreate, "bge-large-zh-v1.5")), ConfigError);
    KnowledgeBase after(root, "t");
    EXPECT_EQ(after.chunk_count(), n);
    write(content + "/坏.json", "{oops");
    auto r = update_knowledge_bases(root, quiet(UpdateMode::recreate));
    EXPECT_EQ(r.count("failed"), 1u);
    EXPECT_EQ(KnowledgeBase(root, "t").chunk_count(), n);
}

TEST_F(KbStore, PruneDbAndPruneFolder) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    fs::remove(content + "/问答.txt");
    write(content + "/未索引.txt", "还没有索引");
    UpdateOptions o = quiet(UpdateMode::none);
    o.prune_db = true;
    o.prune_folder = true;
    auto r = update_knowledge_bases(root, o);
    EXPECT_EQ(r.count("removed"), 2u);
    EXPECT_FALSE(fs::exists(content + "/未索引.txt"));
    EXPECT_EQ(KnowledgeBase(root, "t").chunk_count(), 3);
}

TEST_F(KbStore, ThresholdAndExplain) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.explain = true;
    o.top_k = 1;
    auto hits = kb.search("密码 证书", o);
    ASSERT_GE(hits.size(), 2u);
    EXPECT_TRUE(hits[0].kept);
    EXPECT_FALSE(hits[1].kept);
    EXPECT_NE(hits[1].reason.find("top_k"), std::string::npos);
    o.score_threshold = 1e9;
    hits = kb.search("密码", o);
    for (auto& h : hits) {
        EXPECT_FALSE(h.kept);
        EXPECT_NE(h.reason.find("threshold"), std::string::npos);
    }
    EXPECT_THROW(kb.search("x", SearchOptions{3, {}, "dense"}), UsageError);   // no vector store
    EXPECT_THROW(KnowledgeBase(root, "missing"), DataError);
}

TEST_F(KbStore, DenseAndHybridWithHashEmbedder) {
    auto r = update_knowledge_bases(root, quiet(UpdateMode::recreate, "hash-ngram"));
    std::string idx = KbPaths{root}.index_path("t", "hash-ngram");
    ASSERT_TRUE(fs::exists(idx));
    KnowledgeBase kb(root, "t");
    EXPECT_EQ(kb.embed_model(), "hash-ngram");
    SearchOptions o;
    o.mode = "dense";
    auto hits = kb.search("忘记管理员密码怎么办", o);
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "问答.txt");
    ASSERT_TRUE(hits[0].cosine.has_value());
    EXPECT_GT(*hits[0].cosine, 0.3);
    EXPECT_LE(*hits[0].cosine, 1.0001);
    o.mode = "hybrid";
    o.explain = true;
    hits = kb.search("证书过期", o);
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "错误.csv");
    EXPECT_NEAR(hits[0].score, 1.0 / 61 + 1.0 / 61, 1e-9);   // rank 1 in both lists
    // Threshold drops the dense vote, not the BM25 one.
    o.score_threshold = 0.999;
    hits = kb.search("证书过期", o);
    ASSERT_FALSE(hits.empty());
    EXPECT_NEAR(hits[0].score, 1.0 / 61, 1e-9);

    // Increment after a change: the index follows the DB (ids removed and added).
    write(content + "/问答.txt", "问：如何升级固件？\n答：在诊断页面上传固件包。");
    update_knowledge_bases(root, quiet(UpdateMode::increment, "hash-ngram"));
    KnowledgeBase kb2(root, "t");
    SearchOptions d;
    d.mode = "dense";
    EXPECT_EQ(kb2.search("如何升级固件", d).at(0).file_name, "问答.txt");
}

TEST_F(KbStore, StaleVectorStoreIsDetectedAndRepairedByIncrement) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate, "hash-ngram"));
    std::string idx = KbPaths{root}.index_path("t", "hash-ngram");
    std::string old_index = read_file(idx);
    write(content + "/新增.txt", "新增文件：升级说明。");
    update_knowledge_bases(root, quiet(UpdateMode::increment, "hash-ngram"));
    // Simulate a kill between the DB commit and the index rename.
    write(idx, old_index);
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.mode = "dense";
    EXPECT_THROW(kb.search("升级", o), DataError);
    EXPECT_FALSE(kb.search("升级", SearchOptions{}).empty());   // BM25 still works
    update_knowledge_bases(root, quiet(UpdateMode::increment, "hash-ngram"));
    KnowledgeBase kb2(root, "t");
    EXPECT_EQ(kb2.search("升级说明", o).at(0).file_name, "新增.txt");
}

// ---- IVF vector store (large KBs) -----------------------------------------------
// The IVF threshold is set low (ivf_min_chunks 100) so a few hundred generated rows
// get an IndexIVFFlat; a second KB over the same files gets the exact flat index.

class KbIvf : public ::testing::Test {
protected:
    test::TempDir dir;
    std::string root;
    std::vector<std::pair<std::string, std::string>> rows;   // (file#chunk_index, text)
    uint64_t rng = 88172645463325252ull;
    std::string rand_text(size_t n) {
        static const std::u32string pool = U"的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你能而子那得着下自之年过发后里道行所然家种事方多经么去法学如都同现当没动面起看定天还进好小部其些主样理心本前开但因只从想实日";
        std::u32string t;
        for (size_t i = 0; i < n; ++i) {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            t += pool[rng % pool.size()];
        }
        return u32_to_utf8(t);
    }
    // CSV file `name` with `n` rows (one chunk each) into both KBs' content folders.
    void csv(const std::string& name, size_t n) {
        std::string body = "编号,内容\n";
        for (size_t i = 0; i < n; ++i) {
            std::string t = rand_text(40 + i % 30);
            body += std::to_string(i) + "," + t + "\n";
            // A CSV row's chunk text is its "column: value" lines.
            rows.push_back({name + "#" + std::to_string(i), "编号: " + std::to_string(i) + "\n内容: " + t});
        }
        for (const char* kb : {"ivf", "flat"}) write(KbPaths{root}.content_dir(kb) + "/" + name, body);
    }
    void SetUp() override {
        root = dir.str();
        write(root + "/kb_settings.yaml", "vector_index: auto\nivf_min_chunks: 100\nivf_nprobe: 3\n");
        for (int f = 0; f < 8; ++f) csv("f" + std::to_string(f) + ".csv", 60);
    }
    UpdateOptions opts(UpdateMode m, const std::string& kb, const std::string& vi = "") {
        UpdateOptions o = quiet(m, "hash-ngram");
        o.kb_names = {kb};
        o.vector_index = vi;
        return o;
    }
    static std::vector<std::string> keys(const std::vector<SearchHit>& h) {
        std::vector<std::string> k;
        for (auto& x : h) k.push_back(x.file_name + "#" + std::to_string(x.chunk_index));
        return k;
    }
    // Mean recall@10 of `kb` at `nprobe` against the flat KB, over every 8th row as a query.
    double recall_vs_flat(int64_t nprobe) {
        KnowledgeBase ivf(root, "ivf"), flat(root, "flat");
        SearchOptions o;
        o.mode = "dense";
        o.top_k = 10;
        o.nprobe = nprobe;
        SearchOptions of = o;
        of.nprobe = 0;
        double sum = 0;
        size_t n = 0;
        for (size_t i = 0; i < rows.size(); i += 8, ++n) {
            std::string q = rows[i].second.substr(rows[i].second.find("内容: ") + 8, 30);   // 10 CJK characters
            auto a = keys(ivf.search(q, o)), b = keys(flat.search(q, of));
            size_t common = 0;
            for (auto& k : a) common += std::count(b.begin(), b.end(), k);
            sum += b.empty() ? 1.0 : double(common) / double(b.size());
        }
        return sum / double(n);
    }
};

TEST_F(KbIvf, LargeBuildUsesIvfAndAnswersLikeFlat) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    update_knowledge_bases(root, opts(UpdateMode::recreate, "flat", "flat"));   // --vector-index flat
    KnowledgeBase ivf(root, "ivf"), flat(root, "flat");
    auto vi = ivf.vector_index_info();
    EXPECT_EQ(vi.type, "ivf");
    EXPECT_EQ(vi.dim, 256);
    EXPECT_EQ(vi.nlist, 12);   // min(4*sqrt(480), 480/39)
    EXPECT_EQ(vi.nprobe, 3);   // kb_settings.yaml ivf_nprobe
    EXPECT_EQ(vi.ntotal, 480);
    EXPECT_EQ(flat.vector_index_info().type, "flat");
    // Planted queries: a row's own text is its nearest vector, found with any nprobe.
    SearchOptions o;
    o.mode = "dense";
    o.nprobe = 2;
    for (size_t i = 0; i < rows.size(); i += 37) {
        auto h = ivf.search(rows[i].second, o);
        ASSERT_FALSE(h.empty());
        EXPECT_EQ(keys(h)[0], rows[i].first);
        EXPECT_NEAR(*h[0].cosine, 1.0, 1e-4);
    }
    // Probing every list is exhaustive: the flat answer.
    EXPECT_GE(recall_vs_flat(12), 0.99);
    // The configured nprobe (3 of 12 lists) still finds most of the exact top 10.
    double r3 = recall_vs_flat(0);
    EXPECT_GE(r3, 0.5);
    EXPECT_LE(recall_vs_flat(1), r3 + 1e-9);
    // Hybrid works over IVF too.
    o.mode = "hybrid";
    o.nprobe = 0;
    auto hy = ivf.search(rows[5].second, o);
    ASSERT_FALSE(hy.empty());
    EXPECT_EQ(keys(hy)[0], rows[5].first);
}

TEST_F(KbIvf, IncrementKeepsIvfIdsConsistent) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    // Remove one file, change another, add a new one; -i keeps adding to the trained IVF.
    fs::remove(KbPaths{root}.content_dir("ivf") + "/f0.csv");
    write(KbPaths{root}.content_dir("ivf") + "/f1.csv", "编号,内容\n0,固件升级说明：先备份配置再上传固件包\n");
    write(KbPaths{root}.content_dir("ivf") + "/新增.csv", "编号,内容\n0,证书过期时请在管理页面重新签发证书\n");
    auto r = update_knowledge_bases(root, opts(UpdateMode::increment, "ivf"));
    EXPECT_EQ(r.count("removed"), 1u);
    EXPECT_EQ(r.count("updated"), 1u);
    EXPECT_EQ(r.count("added"), 1u);
    KnowledgeBase kb(root, "ivf");   // dense search checks index_matches_db (throws if not)
    auto vi = kb.vector_index_info();
    EXPECT_EQ(vi.type, "ivf");
    EXPECT_EQ(vi.nlist, 12);          // the trained lists are kept, not retrained
    EXPECT_EQ(vi.ntotal, kb.chunk_count());
    EXPECT_EQ(vi.ntotal, 480 - 120 + 2);
    SearchOptions o;
    o.mode = "dense";
    o.top_k = 400;
    o.nprobe = 12;   // exhaustive: every vector left in the index is a candidate
    auto all = kb.search("编号: 0\n内容: 固件升级说明：先备份配置再上传固件包", o);
    ASSERT_FALSE(all.empty());
    EXPECT_EQ(all[0].file_name, "f1.csv");
    for (auto& h : all) {
        EXPECT_NE(h.file_name, "f0.csv");                               // removed ids are gone
        if (h.file_name == "f1.csv") EXPECT_EQ(h.chunk_index, 0);       // old f1 rows are gone
    }
    o.top_k = 1;
    o.nprobe = 0;
    EXPECT_EQ(kb.search("编号: 0\n内容: 证书过期时请在管理页面重新签发证书", o).at(0).file_name, "新增.csv");
}

TEST_F(KbIvf, StaleIvfIsDetectedAndRebuiltAndOtherIndexTypesAreRefused) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    std::string idx = KbPaths{root}.index_path("ivf", "hash-ngram");
    std::string old_index = read_file(idx);
    write(KbPaths{root}.content_dir("ivf") + "/新增.csv", "编号,内容\n0,新增文件：升级说明\n");
    update_knowledge_bases(root, opts(UpdateMode::increment, "ivf"));
    write(idx, old_index);   // a kill between the DB commit and the index rename
    SearchOptions o;
    o.mode = "dense";
    EXPECT_THROW(KnowledgeBase(root, "ivf").search("升级", o), DataError);
    update_knowledge_bases(root, opts(UpdateMode::increment, "ivf"));   // re-embeds from SQLite
    {
        KnowledgeBase kb(root, "ivf");
        EXPECT_EQ(kb.vector_index_info().type, "ivf");
        EXPECT_EQ(kb.search("编号: 0\n内容: 新增文件：升级说明", o).at(0).file_name, "新增.csv");
    }
    // A FAISS file of another type (a bare IndexFlatL2) is a FormatError.
    {
        faiss::IndexFlatL2 other(256);
        faiss::write_index(&other, idx.c_str());
    }
    EXPECT_THROW(KnowledgeBase(root, "ivf").search("升级", o), FormatError);
}

// The compact copies of the IVF lists (SearchOptions::ivf_scan fp16 / int8, AVX-512
// CPUs; elsewhere every run below takes FAISS's path and they agree trivially) answer like
// FAISS's fp32 scan: same probed lists, the same top 10, exact fp32 cosines.
TEST_F(KbIvf, CompactIvfScansAnswerLikeFaiss) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    KnowledgeBase ivf(root, "ivf");
    size_t swapped = 0;
    for (const char* scan : {"fp16", "int8"})
    for (int64_t nprobe : {1, 3, 12}) {
        SearchOptions a;
        a.ivf_scan = scan;
        a.mode = "dense";
        a.top_k = 10;
        a.nprobe = nprobe;
        SearchOptions b = a;
        b.ivf_scan = "faiss";
        for (size_t i = 0; i < rows.size(); i += 11) {
            std::string q = rows[i].second.substr(rows[i].second.find("内容: ") + 8, 24);
            auto x = ivf.search(q, a), y = ivf.search(q, b);
            ASSERT_EQ(x.size(), y.size());
            // Rank by rank the same cosine; the same chunk unless two chunks' cosines tie
            // to within fp32 summation-order rounding (the two paths add in other orders).
            for (size_t j = 0; j < x.size(); ++j) {
                EXPECT_NEAR(*x[j].cosine, *y[j].cosine, 1e-6) << "nprobe " << nprobe << " query " << q << " rank " << j;
                if (x[j].chunk_id != y[j].chunk_id) {
                    bool tie = (j + 1 < x.size() && std::abs(*y[j].cosine - *y[j + 1].cosine) < 1e-6) ||
                               (j > 0 && std::abs(*y[j].cosine - *y[j - 1].cosine) < 1e-6) || j + 1 == x.size();
                    EXPECT_TRUE(tie) << "nprobe " << nprobe << " query " << q << " rank " << j << " cosine " << *x[j].cosine
                                     << " vs " << *y[j].cosine;
                    ++swapped;
                }
            }
        }
    }
    EXPECT_LE(swapped, 6u);
    SearchOptions bad;
    bad.mode = "dense";
    bad.ivf_scan = "bf16";
    EXPECT_THROW(ivf.search("升级", bad), UsageError);
}

// Hybrid with the dense search on a second thread (default) returns exactly what the
// one-thread order returns.
TEST_F(KbIvf, HybridParallelEqualsSerial) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    KnowledgeBase kb(root, "ivf");
    SearchOptions par;
    par.mode = "hybrid";
    par.top_k = 8;
    par.explain = true;
    SearchOptions ser = par;
    ser.hybrid_parallel = false;
    for (size_t i = 1; i < rows.size(); i += 53) {
        std::string q = rows[i].second.substr(rows[i].second.find("内容: ") + 8, 15);
        auto a = kb.search(q, par), b = kb.search(q, ser);
        ASSERT_EQ(a.size(), b.size());
        for (size_t j = 0; j < a.size(); ++j) {
            EXPECT_EQ(a[j].chunk_id, b[j].chunk_id);
            EXPECT_EQ(a[j].score, b[j].score);
            EXPECT_EQ(a[j].kept, b[j].kept);
        }
    }
}

// BM25 scored from the postings (SearchOptions::bm25_scorer "postings", the default for
// KBs >= 20000 chunks) gives every matching chunk FTS5's own -bm25() score.
TEST_F(KbIvf, PostingsBm25ScoresEqualFts5Bm25) {
    update_knowledge_bases(root, opts(UpdateMode::recreate, "ivf"));
    KnowledgeBase kb(root, "ivf");
    SearchOptions p;
    p.mode = "bm25";
    p.explain = true;        // every candidate, not only the kept ones
    p.candidates = 100000;   // every matching chunk: no cut among equal scores
    p.bm25_scorer = "postings";
    SearchOptions f = p;
    f.bm25_scorer = "fts5";
    size_t compared = 0;
    for (size_t i = 3; i < rows.size(); i += 29) {
        std::string q = rows[i].second.substr(rows[i].second.find("内容: ") + 8, 18);   // 6 CJK characters, 5 bigrams
        auto x = kb.search(q, p), y = kb.search(q, f);
        ASSERT_EQ(x.size(), y.size()) << q;
        ASSERT_FALSE(x.empty());
        std::map<int64_t, double> sy;
        for (auto& h : y) sy[h.chunk_id] = *h.bm25;
        for (size_t j = 0; j < x.size(); ++j) {
            ASSERT_TRUE(sy.count(x[j].chunk_id)) << q;
            EXPECT_NEAR(*x[j].bm25, sy[x[j].chunk_id], 1e-9 * std::abs(sy[x[j].chunk_id]));
            EXPECT_EQ(x[j].chunk_id, y[j].chunk_id);   // same order (ties by chunk id in both)
            EXPECT_EQ(x[j].kept, y[j].kept);
            ++compared;
        }
        EXPECT_EQ(x[0].file_name + "#" + std::to_string(x[0].chunk_index), rows[i].first);   // the row itself ranks first
    }
    EXPECT_GT(compared, 100u);
    p.bm25_scorer = "lucene";
    EXPECT_THROW(kb.search("升级", p), UsageError);
}

TEST(KbSettingsTest, VectorIndexSettingIsValidated) {
    test::TempDir d;
    write(d.file("kb_settings.yaml"), "vector_index: hnsw\n");
    EXPECT_THROW(load_kb_settings(d.str()), ConfigError);
    write(d.file("kb_settings.yaml"), "vector_index: ivf\nivf_min_chunks: 10\nivf_nprobe: 8\n");
    auto s = load_kb_settings(d.str());
    EXPECT_EQ(s.vector_index, "ivf");
    EXPECT_EQ(s.ivf_min_chunks, 10);
    EXPECT_EQ(s.ivf_nprobe, 8);
    EXPECT_EQ(make_embedder("hash-ngram-1024")->dim(), 1024);
    EXPECT_EQ(make_embedder("hash-ngram-1024")->name(), "hash-ngram-1024");
    EXPECT_EQ(make_embedder("hash-ngram")->name(), "hash-ngram");
    EXPECT_THROW(make_embedder("hash-ngram-x"), ConfigError);
}

TEST(KbEmbedder, HashNgramIsDeterministicAndNormalised) {
    HashNgramEmbedder e(64);
    auto v = e.embed({"安装指南", "安装指南", "完全不同"}, false);
    EXPECT_EQ(v[0], v[1]);
    double n = 0, dot = 0;
    for (int i = 0; i < 64; ++i) { n += v[0][i] * v[0][i]; dot += v[0][i] * v[2][i]; }
    EXPECT_NEAR(n, 1.0, 1e-5);
    EXPECT_LT(dot, 0.5);
    EXPECT_EQ(make_embedder("none"), nullptr);
    EXPECT_THROW(make_embedder("bge-m3"), ConfigError);
    register_embedder_factory("fake-test", [](const std::string&) { return std::make_unique<HashNgramEmbedder>(8); });
    EXPECT_EQ(make_embedder("fake-test")->dim(), 8);
}

// ---- paths and init ------------------------------------------------------------

TEST(KbPathsTest, RootResolutionAndLayout) {
    ::unsetenv("PDSD_ROOT");
    EXPECT_EQ(resolve_root(""), (fs::current_path() / "data").string());
    ::setenv("PDSD_ROOT", "/tmp/pdsd-root-x", 1);
    EXPECT_EQ(resolve_root(""), "/tmp/pdsd-root-x");
    EXPECT_EQ(resolve_root("/a/b/../c"), "/a/c");
    ::unsetenv("PDSD_ROOT");
    KbPaths p{"/r"};
    EXPECT_EQ(p.info_db(), "/r/knowledge_base/info.db");
    EXPECT_EQ(p.content_dir("s"), "/r/knowledge_base/s/content");
    EXPECT_EQ(p.index_path("s", "bge:m3"), "/r/knowledge_base/s/vector_store/bge_m3/index.faiss");
    EXPECT_THROW(KnowledgeBase("/r", "../etc"), UsageError);
}

TEST(KbInit, InitCopiesSamplesAndKeepsExistingConfigs) {
    test::TempDir d;
    write(d.file("kb_settings.yaml"), "top_k: 5\n");
    std::string samples = test::source_dir() + "/share/samples";
    auto lines = init_root(d.str(), samples);
    EXPECT_EQ(read_file(d.file("kb_settings.yaml")), "top_k: 5\n");
    EXPECT_TRUE(fs::exists(d.file("model_settings.yaml")));
    EXPECT_TRUE(fs::exists(d.file("knowledge_base/samples/content/安装指南.md")));
    EXPECT_EQ(load_kb_settings(d.str()).top_k, 5);
    auto r = update_knowledge_bases(d.str(), quiet(UpdateMode::recreate));
    EXPECT_EQ(r.count("failed"), 0u);
    // Every shipped sample is indexed (one per supported format).
    size_t shipped = 0;
    for (auto& e : fs::directory_iterator(samples)) shipped += is_supported_extension(file_extension(e.path().string()));
    EXPECT_EQ(shipped, 6u);
    EXPECT_EQ(r.count("added"), shipped);
    KnowledgeBase kb(d.str(), "samples");
    EXPECT_EQ(kb.search("E2003 证书", SearchOptions{}).at(0).file_name, "错误码.csv");
}

// `--model none` (chat / serve): retrieval-only even when model_settings.yaml names a model;
// a model folder given by name under <root>/models resolves; a missing one is an IoError.
TEST(KbInit, ModelNoneIsRetrievalOnlyWhateverTheSettingsSay) {
    test::TempDir d;
    fs::create_directories(d.file("models/m"));
    write(d.file("models/m/config.json"), "{}");
    write(d.file("models/m/model.safetensors"), "x");
    write(d.file("models/m/tokenizer.json"), "{}");
    write(d.file("model_settings.yaml"), "default_llm_model: m\n");
    EXPECT_EQ(fs::path(resolve_llm_model_dir(d.str(), "")).filename(), "m");
    EXPECT_EQ(resolve_llm_model_dir(d.str(), "none"), "");
    EXPECT_EQ(fs::path(resolve_llm_model_dir(d.str(), "m")).filename(), "m");
    EXPECT_THROW(resolve_llm_model_dir(d.str(), "absent"), IoError);
}

TEST(KbProgress, PlainLinesWhenNotATty) {
    std::FILE* f = std::tmpfile();
    {
        Progress p("kb x", 4, "files", "chunks", Progress::Style::plain, f);
        p.plain_interval_s = 0;
        p.advance(2, 10);
        EXPECT_NE(p.status_line().find("2/4 files, 10 chunks"), std::string::npos);
        EXPECT_NE(p.status_line().find("ETA"), std::string::npos);
        p.advance(2, 10);
    }
    std::rewind(f);
    char buf[512] = {0};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string out(buf, n);
    EXPECT_EQ(out.find('\r'), std::string::npos);
    EXPECT_NE(out.find("4/4 files, 20 chunks"), std::string::npos);
}

// ---- PDF (only when built with poppler-cpp) ----------------------------------------

namespace {
// A 2-page PDF: page 1 has a text line, page 2 has none (like a scanned page).
std::string tiny_pdf() {
    std::vector<std::string> objs = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 5 0 R /Resources << /Font << /F1 6 0 R >> >> >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"};
    std::string stream = "BT /F1 12 Tf 20 100 Td (Gateway reset password guide) Tj ET";
    objs[4] = "<< /Length " + std::to_string(stream.size()) + " >>\nstream\n" + stream + "\nendstream";
    std::string pdf = "%PDF-1.4\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < objs.size(); ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objs[i] + "\nendobj\n";
    }
    size_t xref = pdf.size();
    pdf += "xref\n0 " + std::to_string(objs.size() + 1) + "\n0000000000 65535 f \n";
    for (size_t o : offsets) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%010zu 00000 n \n", o);
        pdf += buf;
    }
    pdf += "trailer\n<< /Size " + std::to_string(objs.size() + 1) + " /Root 1 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}
}  // namespace

TEST(KbLoader, PdfTextAndScannedPagesAreReported) {
    if (!is_supported_extension(".pdf")) GTEST_SKIP() << "built without poppler-cpp";
    auto lf = load_bytes("guide.pdf", tiny_pdf());
    EXPECT_EQ(lf.loader, "PDFLoader");
    ASSERT_EQ(lf.docs.size(), 1u);
    EXPECT_NE(lf.docs[0].text.find("reset password"), std::string::npos);
    ASSERT_FALSE(lf.warnings.empty());
    EXPECT_NE(lf.warnings[0].find("1 of 2 pages have no text layer"), std::string::npos) << lf.warnings[0];
    EXPECT_THROW(load_bytes("broken.pdf", "%PDF-1.4 garbage"), DataError);
}

namespace {
// A minimal .docx: a zip holding word/document.xml (all Word needs to show text).
std::string make_docx(const std::string& document_xml) {
    auto path = (std::filesystem::temp_directory_path() / ("pdsd_docx_" + std::to_string(::getpid()) + ".docx")).string();
    std::filesystem::remove(path);
    int err = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    EXPECT_NE(za, nullptr);
    zip_source_t* src = zip_source_buffer(za, document_xml.data(), document_xml.size(), 0);
    EXPECT_GE(zip_file_add(za, "word/document.xml", src, ZIP_FL_ENC_UTF_8), 0);
    EXPECT_EQ(zip_close(za), 0);
    std::string bytes = pdsd::read_file(path);
    std::filesystem::remove(path);
    return bytes;
}
}  // namespace

TEST(KbLoader, DocxParagraphsTablesAndImages) {
    const std::string w = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";
    std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:document " + w + "><w:body>"
        "<w:p><w:r><w:t>第一章 安装</w:t></w:r></w:p>"
        "<w:p><w:r><w:t xml:space=\"preserve\">运行 </w:t></w:r><w:r><w:t>pdsd init</w:t></w:r><w:r><w:tab/><w:t>即可。</w:t></w:r></w:p>"
        "<w:p><w:r><w:instrText>PAGE</w:instrText><w:delText>旧文本</w:delText><w:drawing/></w:r></w:p>"
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>错误码</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>含义</w:t></w:r></w:p></w:tc></w:tr>"
        "<w:tr><w:tc><w:p><w:r><w:t>E01</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>磁盘已满</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
        "<w:p><w:r><w:t>结束&amp;完</w:t></w:r><w:r><w:br/><w:t>下一行</w:t></w:r></w:p>"
        "</w:body></w:document>";
    auto lf = load_bytes("手册.DOCX", make_docx(xml));
    EXPECT_EQ(lf.loader, "DocxLoader");
    ASSERT_EQ(lf.docs.size(), 1u);
    EXPECT_EQ(lf.docs[0].text, "第一章 安装\n运行 pdsd init\t即可。\n错误码 | 含义\nE01 | 磁盘已满\n结束&完\n下一行\n");
    ASSERT_EQ(lf.warnings.size(), 1u);
    EXPECT_NE(lf.warnings[0].find("1 embedded image(s) skipped"), std::string::npos) << lf.warnings[0];
}

TEST(KbLoader, BrokenDocxIsDataErrorNamingTheFile) {
    try {
        load_bytes("broken.docx", "PK\x03\x04 not really a zip");
        FAIL() << "expected DataError";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("broken.docx"), std::string::npos) << e.what();
    }
    // A zip without word/document.xml (e.g. an .xlsx renamed).
    std::string renamed = make_docx("<x/>");
    for (size_t at; (at = renamed.find("word/document.xml")) != std::string::npos;) renamed.replace(at, 17, "word/documenX.xml");
    EXPECT_THROW(load_bytes("notes.docx", renamed), DataError);
    EXPECT_THROW(load_bytes("bad.docx", make_docx("<w:document><unclosed>")), DataError);
}

TEST_F(KbStore, EvalComputesHitAtKAndMrrFromRanks) {
    update_knowledge_bases(root, quiet(UpdateMode::recreate));
    write(dir.file("qa.jsonl"),
          "{\"question\": \"忘记管理员密码怎么办\", \"source\": \"问答.txt\"}\n"
          "\n"
          "{\"query\": \"证书过期\", \"sources\": [\"nope.txt\", \"错误.csv\"]}\n"
          "{\"question\": \"完全无关\", \"source\": \"安装.md\"}\n");
    auto qs = load_qa_file(dir.file("qa.jsonl"));
    ASSERT_EQ(qs.size(), 3u);
    EXPECT_EQ(qs[1].line, 3u);
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.top_k = 3;
    // The ranks come from the same search the report runs: compute them independently.
    auto rank_of = [&](const std::string& q, const std::string& file) -> size_t {
        auto hits = kb.search(q, o);
        for (size_t i = 0; i < hits.size(); ++i)
            if (hits[i].file_name == file) return i + 1;
        return 0;
    };
    size_t r1 = rank_of("忘记管理员密码怎么办", "问答.txt"), r2 = rank_of("证书过期", "错误.csv"), r3 = rank_of("完全无关", "安装.md");
    ASSERT_EQ(r1, 1u);
    ASSERT_EQ(r2, 1u);
    ASSERT_EQ(r3, 0u);   // no shared term: a miss
    auto rep = evaluate(kb, qs, o);
    ASSERT_EQ(rep.ks, (std::vector<size_t>{1, 3}));
    EXPECT_DOUBLE_EQ(rep.hit_at[0], 2.0 / 3);
    EXPECT_DOUBLE_EQ(rep.hit_at[1], 2.0 / 3);
    EXPECT_DOUBLE_EQ(rep.mrr, 2.0 / 3);
    EXPECT_FALSE(rep.results[2].rank.has_value());
    // A source ranked second counts 1/2 in MRR and misses hit@1.
    write(dir.file("qa2.jsonl"), "{\"question\": \"证书过期 忘记管理员密码\", \"source\": \"" +
                                     kb.search("证书过期 忘记管理员密码", o).at(1).file_name + "\"}\n");
    auto rep2 = evaluate(kb, load_qa_file(dir.file("qa2.jsonl")), o);
    EXPECT_DOUBLE_EQ(rep2.hit_at[0], 0.0);
    EXPECT_DOUBLE_EQ(rep2.hit_at[1], 1.0);
    EXPECT_DOUBLE_EQ(rep2.mrr, 0.5);
}

TEST(KbEval, BadQaFilesNameLineAndField) {
    test::TempDir dir;
    auto expect_error = [&](const std::string& body, const std::string& needle) {
        write(dir.file("q.jsonl"), body);
        try {
            load_qa_file(dir.file("q.jsonl"));
            ADD_FAILURE() << "no error for " << body;
        } catch (const DataError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error("{\"question\": \"a\", \"source\": \"x\"}\n{oops}\n", "line 2");
    expect_error("{\"question\": \"a\"}\n", "\"source\"");
    expect_error("{\"question\": 3, \"source\": \"x\"}\n", "\"question\"");
    expect_error("{\"question\": \"a\", \"sources\": [1]}\n", "line 1");
    expect_error("\n\n", "no questions");
    EXPECT_THROW(load_qa_file(dir.file("missing.jsonl")), IoError);
}
