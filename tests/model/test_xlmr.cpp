// XLM-RoBERTa (bge-m3 family) against Hugging Face, on tests/model/fixtures/tiny-xlmr
// (made by scripts/make_tiny_xlmr.py: a 500-piece unigram sentencepiece model and a
// 2-layer XLMRobertaModel): token ids of ~50 strings exactly as HF's XLMRobertaTokenizer,
// last_hidden_state and the L2-normalised <s> vector within 1e-5, and the kb embedder.
#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/model/bert.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <filesystem>

using namespace pdsd;

namespace {
std::string fixture() { return test::source_dir() + "/tests/model/fixtures/tiny-xlmr"; }
const nlohmann::json& reference() {
    static const nlohmann::json j = read_json_file(fixture() + "/reference.json");
    return j;
}
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}
}  // namespace

TEST(XlmrTokenizer, IdsMatchHfXlmRobertaTokenizer) {
    auto tok = tokenizer::XlmrTokenizer::load(fixture());
    const auto& r = reference();
    ASSERT_EQ(r["strings"].size(), r["ids"].size());
    size_t bad = 0;
    for (size_t i = 0; i < r["strings"].size(); ++i) {
        std::string s = r["strings"][i].get<std::string>();
        auto want = r["ids"][i].get<std::vector<int32_t>>();
        auto got = tok.encode(s, 0).ids;
        EXPECT_EQ(got, want) << "string " << i << ": " << s;
        bad += got != want;
    }
    EXPECT_EQ(bad, 0u);
}

TEST(XlmrTokenizer, TruncationKeepsBosAndEos) {
    auto tok = tokenizer::XlmrTokenizer::load(fixture());
    const auto& r = reference();
    for (size_t i = 0; i < r["strings"].size(); ++i) {
        std::string s = r["strings"][i].get<std::string>();
        auto e = tok.encode(s, 16);
        EXPECT_EQ(e.ids, r["truncated_16"][i].get<std::vector<int32_t>>()) << s;
        EXPECT_EQ(e.full_length, r["ids"][i].size());
        EXPECT_EQ(e.truncated(), r["ids"][i].size() > 16);
    }
    EXPECT_THROW(tok.encode("x", 1), UsageError);
}

TEST(XlmrTokenizer, FairseqIdLayout) {
    auto tok = tokenizer::XlmrTokenizer::load(fixture());
    EXPECT_EQ(tok.vocab_size(), reference()["spm_pieces"].get<size_t>() + 2);
    EXPECT_EQ(tok.mask_id(), reference()["mask_id"].get<int32_t>());
    EXPECT_EQ(tok.model_max_length(), 64u);   // tokenizer_config.json
    EXPECT_EQ(tok.encode("").ids, (std::vector<int32_t>{0, 2}));
    EXPECT_EQ(tok.encode_plain("<s><pad></s><unk><mask>"), (std::vector<int32_t>{0, 1, 2, 3, tok.mask_id()}));
    auto pieces = tok.tokenize("中");
    ASSERT_FALSE(pieces.empty());
    EXPECT_EQ(pieces[0], "\xe2\x96\x81");   // "▁" word start
}

TEST(XlmrTokenizer, TokenizerJsonAloneIsRefusedWithAHint) {
    test::TempDir d;
    std::filesystem::copy_file(fixture() + "/tokenizer.json", d.file("tokenizer.json"));
    try {
        tokenizer::XlmrTokenizer::load(d.str());
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("sentencepiece.bpe.model"), std::string::npos) << e.what();
    }
    std::filesystem::create_directories(d.file("empty"));
    EXPECT_THROW(tokenizer::XlmrTokenizer::load(d.file("empty")), IoError);
}

TEST(Xlmr, TinyXlmrMatchesHfReference) {
    auto model = model::BertEmbedder::load(fixture());
    const auto& b = reference()["batch"];
    const int64_t B = b["shape"][0], L = b["shape"][1];
    std::vector<int64_t> ids, mask;
    for (auto& row : b["ids"]) for (auto& v : row) ids.push_back(v.get<int64_t>());
    for (auto& row : b["mask"]) for (auto& v : row) mask.push_back(v.get<int64_t>());
    std::vector<float> cls;
    auto hidden = model->forward(ids, mask, B, L, &cls);
    // Every position, padded ones included (HF gives padding position padding_idx).
    const float dh = max_abs_diff(hidden, b["last_hidden_state"].get<std::vector<float>>());
    const float dc = max_abs_diff(cls, b["cls"].get<std::vector<float>>());
    EXPECT_LT(dh, 1e-5f);
    EXPECT_LT(dc, 1e-5f);
    std::cerr << "tiny-xlmr vs HF: max |diff| last_hidden_state " << dh << ", cls " << dc << "\n";
    EXPECT_EQ(model->hidden_size(), 32);
    EXPECT_EQ(model->max_length(), 64u);   // min(66 - 2 positions, model_max_length 64)
    EXPECT_EQ(model->tokenizer(), nullptr);
    ASSERT_NE(model->xlmr_tokenizer(), nullptr);
}

TEST(Xlmr, PackedEmbedFromTextGivesTheHfClsVectors) {
    model::BertEmbedOptions o;
    o.max_batch = 2;   // rows in different packed batches, sorted by length
    auto model = model::BertEmbedder::load(fixture(), o);
    const auto& b = reference()["batch"];
    auto texts = b["texts"].get<std::vector<std::string>>();
    auto vecs = model->embed(texts);
    auto want = b["cls"].get<std::vector<float>>();
    ASSERT_EQ(vecs.size(), texts.size());
    std::vector<float> flat;
    for (auto& v : vecs) flat.insert(flat.end(), v.begin(), v.end());
    EXPECT_LT(max_abs_diff(flat, want), 1e-5f);
    // A text longer than the cap is cut to 64 tokens and counted.
    std::string long_text;
    for (int i = 0; i < 100; ++i) long_text += "知识库 ";
    model->embed({long_text});
    EXPECT_EQ(model->stats().truncated, 1u);
}

TEST(Xlmr, KbEmbedderDetectsXlmRobertaFolder) {
    auto e = kb::make_embedder(fixture());
    ASSERT_NE(e, nullptr);
    kb::EmbedderOptions o;
    o.dtype = "fp32";   // HF's numbers (the default "auto" is bf16 on AVX512-BF16/AMX CPUs)
    e->configure(o);
    EXPECT_EQ(e->dim(), 32);
    EXPECT_EQ(e->max_tokens(), 64u);
    EXPECT_EQ(e->token_count("你好，世界！"), reference()["ids"][0].size());
    // bge-m3 has no query instruction: a query embeds like a document.
    auto q = e->embed({"你好，世界！"}, true);
    auto d = e->embed({"你好，世界！"}, false);
    ASSERT_EQ(q.size(), 1u);
    EXPECT_LT(max_abs_diff(q[0], d[0]), 1e-7f);
    std::vector<float> want = reference()["batch"]["cls"].get<std::vector<float>>();
    want.resize(32);
    EXPECT_LT(max_abs_diff(d[0], want), 1e-5f);
}

// XLMRobertaForMaskedLM-style checkpoints keep the encoder under "roberta.": same numbers.
TEST(Xlmr, RobertaPrefixedCheckpointLoads) {
    test::TempDir d;
    for (const char* f : {"config.json", "sentencepiece.bpe.model", "tokenizer_config.json"})
        std::filesystem::copy_file(fixture() + "/" + f, d.file(f));
    Checkpoint ck = Checkpoint::open(fixture());
    std::vector<TensorView> views;
    for (const auto& n : ck.names()) {
        const auto& info = ck.info(n);
        views.push_back({"roberta." + n, info.dtype, info.shape, ck.data(n), info.nbytes()});
    }
    write_safetensors(d.file("model.safetensors"), views);
    auto a = model::BertEmbedder::load(fixture())->embed({"你好，世界！", "pdsd kb -r"});
    auto b = model::BertEmbedder::load(d.str())->embed({"你好，世界！", "pdsd kb -r"});
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]);
}

// A <pad> written in the text is a token whose position stays padding_idx and does not
// advance the following positions (HF create_position_ids_from_input_ids): the packed
// embed() path and the padded forward() path agree on it.
TEST(Xlmr, PadTokenInsideTextKeepsPaddingPosition) {
    auto model = model::BertEmbedder::load(fixture());
    std::string text = "知识库 <pad> 重建 <pad><pad> 失败";
    auto e = model->xlmr_tokenizer()->encode(text);
    ASSERT_EQ(std::count(e.ids.begin(), e.ids.end(), tokenizer::XlmrTokenizer::kPad), 3);
    std::vector<int64_t> ids(e.ids.begin(), e.ids.end()), mask(ids.size(), 1);
    std::vector<float> cls;
    model->forward(ids, mask, 1, static_cast<int64_t>(ids.size()), &cls);
    auto v = model->embed({text});
    EXPECT_LT(max_abs_diff(v[0], cls), 1e-6f);
}
