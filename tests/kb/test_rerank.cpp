// Reranking: the cross-encoder (golden: tests/fixtures/tiny-xlmr-reranker, scores of
// sentence-transformers' CrossEncoder and HF's XLMRobertaForSequenceClassification) and the
// ranking stage of KnowledgeBase::search (fusion, rerank, top_k; settings -> options).
#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"
#include "pdsd/kb/eval.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/reranker.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::kb;

namespace {

const std::string kFixture = std::string(PDSD_FIXTURES_DIR) + "/tiny-xlmr-reranker";

nlohmann::json reference() { return read_json_file(kFixture + "/reference.json"); }

void write(const std::string& path, const std::string& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
}

// Model-free reranker for the ranking-stage tests: logit +5 for a document containing
// `word`, else -5; the texts it was given are recorded.
class WordReranker final : public Reranker {
public:
    explicit WordReranker(std::string word) : word_(std::move(word)) {}
    std::vector<double> pair_logits(const std::vector<std::pair<std::string, std::string>>& pairs) override {
        std::vector<double> out;
        for (auto& [q, d] : pairs) {
            seen.push_back(d);
            out.push_back(d.find(word_) != std::string::npos ? 5.0 : -5.0);
        }
        return out;
    }
    std::string name() const override { return "word"; }
    size_t max_length() const override { return 512; }
    std::vector<std::string> seen;

private:
    std::string word_;
};

}  // namespace

// ---- the cross-encoder against the oracle's golden scores ----

TEST(KbReranker, PairIdsEqualHfLongestFirstTruncation) {
    auto ref = reference();
    auto tok = tokenizer::XlmrTokenizer::load(kFixture);
    const size_t max_length = ref["max_length"].get<size_t>();
    size_t truncated = 0;
    for (size_t i = 0; i < ref["pairs"].size(); ++i) {
        auto q = tok.encode_plain(ref["pairs"][i][0].get<std::string>());
        auto d = tok.encode_plain(ref["pairs"][i][1].get<std::string>());
        auto ids = xlmr_pair_ids(q, d, max_length);
        EXPECT_EQ(ids, ref["input_ids"][i].get<std::vector<int32_t>>()) << "pair " << i;
        if (q.size() + d.size() + 4 > max_length) ++truncated;
    }
    EXPECT_GE(truncated, 4u);   // the fixture exercises truncation
    // longest_first by hand: budget 6 -> the shorter keeps its 2, the longer 4; both long -> 3 + 3.
    std::vector<int32_t> a(2, 7), b(9, 8), c(9, 9);
    auto ab = xlmr_pair_ids(a, b, 10);
    EXPECT_EQ(ab.size(), 10u);
    EXPECT_EQ(std::count(ab.begin(), ab.end(), 7), 2);
    EXPECT_EQ(std::count(ab.begin(), ab.end(), 8), 4);
    auto bc = xlmr_pair_ids(b, c, 11);   // budget 7, both long: 3 + 4 (the odd token to the second on a tie)
    EXPECT_EQ(std::count(bc.begin(), bc.end(), 8), 3);
    EXPECT_EQ(std::count(bc.begin(), bc.end(), 9), 4);
    EXPECT_THROW(xlmr_pair_ids(a, b, 4), UsageError);
}

TEST(KbReranker, ScoresEqualCrossEncoderAndHfLogits) {
    auto ref = reference();
    RerankerOptions ro;
    ro.max_length = ref["max_length"].get<size_t>();
    auto rr = open_reranker("", kFixture, ro);
    EXPECT_EQ(rr->name(), "tiny-xlmr-reranker");
    EXPECT_EQ(rr->max_length(), ro.max_length);
    std::vector<std::pair<std::string, std::string>> pairs;
    for (auto& p : ref["pairs"]) pairs.emplace_back(p[0].get<std::string>(), p[1].get<std::string>());
    auto logits = rr->pair_logits(pairs);
    ASSERT_EQ(logits.size(), pairs.size());
    double worst = 0;
    for (size_t i = 0; i < pairs.size(); ++i) {
        EXPECT_NEAR(logits[i], ref["logits"][i].get<double>(), 1e-4) << "pair " << i;
        EXPECT_NEAR(rerank_sigmoid(logits[i]), ref["crossencoder_scores"][i].get<double>(), 1e-4) << "pair " << i;
        worst = std::max(worst, std::abs(logits[i] - ref["logits"][i].get<double>()));
    }
    // The fixture's scores differ between pairs (a constant model would pass trivially).
    auto mm = std::minmax_element(logits.begin(), logits.end());
    EXPECT_GT(*mm.second - *mm.first, 0.5);
    // Per-query call (the KB's path) gives the same numbers as the pair batch.
    std::vector<std::string> docs;
    for (size_t i = 0; i < 8; ++i) docs.push_back(pairs[i].second);
    auto s = rr->scores(pairs[0].first, docs);
    for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(s[i], ref["crossencoder_scores"][i].get<double>(), 1e-4);
    RecordProperty("max_abs_logit_diff", std::to_string(worst));
}

TEST(KbReranker, FoldersThatAreNotCrossEncodersAreClearErrors) {
    // An XLMRobertaModel without a classification head.
    try {
        open_reranker("", std::string(PDSD_SOURCE_DIR) + "/tests/model/fixtures/tiny-xlmr");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("classifier.dense.weight"), std::string::npos) << e.what();
    }
    EXPECT_THROW(open_reranker("", "/no/such/reranker"), IoError);
    EXPECT_THROW(open_reranker("", "none"), UsageError);
    // A name under <root>/models resolves.
    test::TempDir dir;
    fs::create_directories(dir.str() + "/models");
    fs::create_directory_symlink(kFixture, dir.str() + "/models/my-reranker");
    EXPECT_EQ(open_reranker(dir.str(), "my-reranker")->name(), "my-reranker");
}

// ---- the ranking stage ----

class KbRankStage : public ::testing::Test {
protected:
    test::TempDir dir;
    std::string root;
    void SetUp() override {
        root = dir.str();
        std::string content = KbPaths{root}.content_dir("t");
        write(content + "/a.txt", "证书过期 证书过期 证书过期：错误码 E2003。");
        write(content + "/b.txt", "证书过期时请更新证书。这里说明续期步骤 renew。");
        write(content + "/c.txt", "连接超时：检查网络。");
        UpdateOptions u;
        u.progress = false;
        u.embed_model = "hash-ngram";
        update_knowledge_bases(root, u);
    }
};

TEST_F(KbRankStage, RerankReordersTheFusedCandidatesAndKeepsTheirScores) {
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.mode = "hybrid";
    o.top_k = 2;
    auto plain = kb.search("证书过期", o);
    ASSERT_GE(plain.size(), 2u);
    EXPECT_EQ(plain[0].file_name, "a.txt");   // BM25 and dense both prefer the repeated phrase
    auto rr = std::make_shared<WordReranker>("renew");
    o.reranker = rr;
    auto hits = kb.search("证书过期", o);
    ASSERT_EQ(hits.size(), 2u);
    EXPECT_EQ(hits[0].file_name, "b.txt");
    ASSERT_TRUE(hits[0].rerank && hits[0].fused && hits[0].fused_rank);
    EXPECT_NEAR(hits[0].score, rerank_sigmoid(5.0), 1e-12);
    EXPECT_NEAR(*hits[0].fused, plain[1].score, 1e-12);   // b was second after fusion
    EXPECT_EQ(*hits[0].fused_rank, 2u);
    EXPECT_NEAR(hits[1].score, rerank_sigmoid(-5.0), 1e-12);
    EXPECT_TRUE(hits[0].kept && hits[1].kept);
    EXPECT_EQ(rr->seen.size(), 3u);   // every kept candidate (3 < rerank_top_n 20) was rescored

    // rerank_top_n 1: only the best fused candidate is rescored; the others are dropped.
    rr->seen.clear();
    o.rerank_top_n = 1;
    o.explain = true;
    hits = kb.search("证书过期", o);
    EXPECT_EQ(rr->seen.size(), 1u);
    ASSERT_FALSE(hits.empty());
    EXPECT_EQ(hits[0].file_name, "a.txt");
    EXPECT_TRUE(hits[0].kept);
    size_t kept = 0, beyond = 0;
    for (auto& h : hits) {
        kept += h.kept;
        beyond += h.reason.find("beyond rerank_top_n 1") != std::string::npos;
    }
    EXPECT_EQ(kept, 1u);
    EXPECT_GE(beyond, 1u);
    o.rerank_top_n = 0;
    EXPECT_THROW(kb.search("证书过期", o), UsageError);
}

TEST_F(KbRankStage, FusionIsRrfWithWeightsOrWeightedMinMax) {
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.mode = "hybrid";
    auto rrf = kb.search("证书过期", o);
    ASSERT_FALSE(rrf.empty());
    ASSERT_TRUE(rrf[0].bm25_rank && rrf[0].dense_rank);
    EXPECT_NEAR(rrf[0].score, 1.0 / (60 + *rrf[0].bm25_rank) + 1.0 / (60 + *rrf[0].dense_rank), 1e-12);
    o.bm25_weight = 0.5;
    o.dense_weight = 0.25;
    auto w = kb.search("证书过期", o);
    EXPECT_NEAR(w[0].score, 0.5 / (60 + *w[0].bm25_rank) + 0.25 / (60 + *w[0].dense_rank), 1e-12);
    o.fusion = "weighted";
    o.bm25_weight = 0.7;
    o.dense_weight = 0.3;
    o.top_k = 10;
    auto mm = kb.search("证书过期", o);
    ASSERT_FALSE(mm.empty());
    for (auto& h : mm) {
        EXPECT_GE(h.score, 0.0);
        EXPECT_LE(h.score, 1.0 + 1e-12);
    }
    // The chunk first in both lists scores the full weight sum.
    if (mm[0].bm25_rank == 1u && mm[0].dense_rank == 1u) {
        EXPECT_NEAR(mm[0].score, 1.0, 1e-12);
    }
    o.fusion = "borda";
    EXPECT_THROW(kb.search("证书过期", o), UsageError);
}

TEST_F(KbRankStage, SettingsAndOverridesBecomeSearchOptionsInOnePlace) {
    write(root + "/kb_settings.yaml",
          "top_k: 4\nsearch_mode: hybrid\nscore_threshold: 0.1\nfusion: weighted\nhybrid_weights: [0.5, 0.5]\n"
          "USE_RERANKER: true\nRERANKER_MODEL: " + kFixture + "\nRERANKER_MAX_LENGTH: 48\nrerank_top_n: 7\n");
    KbSettings st = load_kb_settings(root);
    EXPECT_TRUE(st.use_reranker);
    EXPECT_EQ(st.reranker_max_length, 48);
    SearchOptions so = make_search_options(root, st);
    EXPECT_EQ(so.top_k, 4u);
    EXPECT_EQ(so.mode, "hybrid");
    EXPECT_EQ(so.fusion, "weighted");
    EXPECT_DOUBLE_EQ(so.bm25_weight, 0.5);
    ASSERT_TRUE(so.score_threshold);
    EXPECT_DOUBLE_EQ(*so.score_threshold, 0.1);
    EXPECT_EQ(so.rerank_top_n, 7u);
    ASSERT_TRUE(so.reranker);
    EXPECT_EQ(so.reranker->name(), "tiny-xlmr-reranker");
    EXPECT_EQ(so.reranker->max_length(), 48u);
    // One model per spec per process.
    EXPECT_EQ(make_search_options(root, st).reranker.get(), so.reranker.get());

    SearchOverrides ov;
    ov.top_k = 2;
    ov.mode = "bm25";
    ov.rerank_model = "none";
    ov.score_threshold = 0.0;
    so = make_search_options(root, st, ov);
    EXPECT_EQ(so.top_k, 2u);
    EXPECT_EQ(so.mode, "bm25");
    EXPECT_FALSE(so.reranker);
    ov.top_k = 0;
    EXPECT_THROW(make_search_options(root, st, ov), Error);
    ov.top_k = 2;
    ov.mode = "fuzzy";
    EXPECT_THROW(make_search_options(root, st, ov), UsageError);

    // A real reranker through the whole stage.
    ov = {};
    KnowledgeBase kb(root, "t");
    auto hits = kb.search("证书过期", make_search_options(root, st, ov));
    ASSERT_FALSE(hits.empty());
    for (auto& h : hits) {
        ASSERT_TRUE(h.rerank);
        EXPECT_GT(h.score, 0.0);
        EXPECT_LT(h.score, 1.0);
    }

    for (const char* bad : {"hybrid_weights: [1]\n", "hybrid_weights: [a, 1]\n", "fusion: sum\n", "RERANKER_MAX_LENGTH: 2\n",
                            "rerank_top_n: 0\n", "USE_RERANKER: maybe\n"}) {
        write(root + "/kb_settings.yaml", bad);
        EXPECT_THROW(load_kb_settings(root), ConfigError) << bad;
    }
}

TEST_F(KbRankStage, EvalReportsLatencyPerQuery) {
    write(root + "/qa.jsonl", "{\"question\": \"证书过期\", \"source\": \"a.txt\"}\n{\"question\": \"连接超时\", \"source\": \"c.txt\"}\n");
    KnowledgeBase kb(root, "t");
    SearchOptions o;
    o.top_k = 3;
    auto rep = evaluate(kb, load_qa_file(root + "/qa.jsonl"), o);
    EXPECT_DOUBLE_EQ(rep.hit_at.back(), 1.0);
    EXPECT_GT(rep.ms_per_query, 0.0);
    EXPECT_GE(rep.max_ms, rep.p50_ms);
    o.reranker = std::make_shared<WordReranker>("网络");
    o.mode = "hybrid";
    rep = evaluate(kb, load_qa_file(root + "/qa.jsonl"), o);
    ASSERT_EQ(rep.results.size(), 2u);
    EXPECT_EQ(rep.results[1].rank, std::optional<size_t>(1));   // c.txt holds 网络
}
