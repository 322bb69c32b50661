// BertModel forward against the HF reference of tests/fixtures/golden/tiny-bert:
// last_hidden_state and the L2-normalised [CLS] (bge pooling) within 1e-5.
#include "pdsd/core/error.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/bert.h"
#include "test_util.h"

#include <cmath>
#include <cstring>

using namespace pdsd;

namespace {
std::vector<float> f32(const Checkpoint& ck, const std::string& name) {
    const auto& info = ck.info(name);
    std::vector<float> v(info.numel());
    std::memcpy(v.data(), ck.data(name), info.nbytes());
    return v;
}
std::vector<int64_t> i64(const Checkpoint& ck, const std::string& name) {
    const auto& info = ck.info(name);
    std::vector<int64_t> v(info.numel());
    std::memcpy(v.data(), ck.data(name), info.nbytes());
    return v;
}
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}
}  // namespace

TEST(Bert, TinyBertMatchesHfReference) {
    auto model = model::BertEmbedder::load(test::golden("tiny-bert"));
    Checkpoint ref = Checkpoint::open(test::golden("tiny-bert.reference.safetensors"));
    auto ids = i64(ref, "input_ids");
    auto mask = i64(ref, "attention_mask");
    const int64_t B = ref.info("input_ids").shape[0], L = ref.info("input_ids").shape[1];
    std::vector<float> cls;
    auto hidden = model->forward(ids, mask, B, L, &cls);
    auto want_hidden = f32(ref, "last_hidden_state");
    // Every position, padded ones included: HF masks padding keys only, as we do.
    EXPECT_LT(max_abs_diff(hidden, want_hidden), 1e-5f);
    EXPECT_LT(max_abs_diff(cls, f32(ref, "cls_normalized")), 1e-5f);
    EXPECT_EQ(model->hidden_size(), 64);
    EXPECT_EQ(model->max_length(), 128u);   // max_position_embeddings (no tokenizer here)
    EXPECT_EQ(model->tokenizer(), nullptr);
}

TEST(Bert, PackedLengthSortedBatchesGiveTheSameVectors) {
    model::BertEmbedOptions o;
    o.max_batch = 2;   // rows land in different batches, sorted by length
    auto model = model::BertEmbedder::load(test::golden("tiny-bert"), o);
    Checkpoint ref = Checkpoint::open(test::golden("tiny-bert.reference.safetensors"));
    auto ids = i64(ref, "input_ids");
    auto mask = i64(ref, "attention_mask");
    const int64_t B = ref.info("input_ids").shape[0], L = ref.info("input_ids").shape[1];
    std::vector<std::vector<int32_t>> rows;
    for (int64_t r = 0; r < B; ++r) {
        std::vector<int32_t> row;
        for (int64_t c = 0; c < L; ++c)
            if (mask[r * L + c]) row.push_back(static_cast<int32_t>(ids[r * L + c]));
        rows.push_back(row);
    }
    rows.push_back(rows[2]);   // a short row batched with a long one
    auto vecs = model->embed_ids({rows[2], rows[0], rows[1], rows[3]});
    auto want = f32(ref, "cls_normalized");
    const int64_t H = 64;
    auto row_of = [&](int r) { return std::vector<float>(want.begin() + r * H, want.begin() + (r + 1) * H); };
    EXPECT_LT(max_abs_diff(vecs[0], row_of(2)), 1e-5f);
    EXPECT_LT(max_abs_diff(vecs[1], row_of(0)), 1e-5f);
    EXPECT_LT(max_abs_diff(vecs[2], row_of(1)), 1e-5f);
    EXPECT_LT(max_abs_diff(vecs[3], row_of(2)), 1e-5f);
    EXPECT_EQ(model->stats().batches, 2u);
    EXPECT_THROW(model->embed({"text"}), ConfigError);   // no vocab in this folder
}

TEST(Bert, PaddedBatchesGiveTheSameVectorsAsPacked) {
    model::BertEmbedOptions o;
    o.packed = false;
    o.max_batch = 2;
    auto padded = model::BertEmbedder::load(test::golden("tiny-bert"), o);
    auto packed = model::BertEmbedder::load(test::golden("tiny-bert"));
    std::vector<std::vector<int32_t>> rows{{101, 5, 6, 7, 102}, {101, 8, 102}, {101, 9, 10, 11, 12, 13, 102}};
    auto a = padded->embed_ids(rows), b = packed->embed_ids(rows);
    for (size_t r = 0; r < rows.size(); ++r) EXPECT_LT(max_abs_diff(a[r], b[r]), 1e-5f);
    EXPECT_GT(padded->stats().padded_tokens, 0u);
}

TEST(Bert, Bf16IsCloseToFp32) {
    model::BertEmbedOptions o;
    o.dtype = "bf16";
    auto model = model::BertEmbedder::load(test::golden("tiny-bert"), o);
    Checkpoint ref = Checkpoint::open(test::golden("tiny-bert.reference.safetensors"));
    std::vector<float> cls;
    model->forward(i64(ref, "input_ids"), i64(ref, "attention_mask"), 3, 12, &cls);
    auto want = f32(ref, "cls_normalized");
    for (int r = 0; r < 3; ++r) {
        double dot = 0;
        for (int k = 0; k < 64; ++k) dot += double(cls[r * 64 + k]) * want[r * 64 + k];
        EXPECT_GT(dot, 0.99) << "row " << r;
    }
}

// The oneDNN path (weights packed at load, bias/GELU/residual add fused into the matmul)
// against at::linear + at::gelu + add: same fp32 numbers, packed and padded forward.
TEST(Bert, FusedLinearMatchesPlainLinear) {
    model::BertEmbedOptions plain_o;
    plain_o.fused_linear = false;
    auto plain = model::BertEmbedder::load(test::golden("tiny-bert"), plain_o);
    auto fused = model::BertEmbedder::load(test::golden("tiny-bert"));
    std::vector<std::vector<int32_t>> rows{{101, 5, 6, 7, 102}, {101, 8, 102}, {101, 9, 10, 11, 12, 13, 102}};
    auto a = plain->embed_ids(rows), b = fused->embed_ids(rows);
    for (size_t r = 0; r < rows.size(); ++r) EXPECT_LT(max_abs_diff(a[r], b[r]), 1e-5f) << "row " << r;
    Checkpoint ref = Checkpoint::open(test::golden("tiny-bert.reference.safetensors"));
    std::vector<float> ca, cb;
    auto ha = plain->forward(i64(ref, "input_ids"), i64(ref, "attention_mask"), 3, 12, &ca);
    auto hb = fused->forward(i64(ref, "input_ids"), i64(ref, "attention_mask"), 3, 12, &cb);
    EXPECT_LT(max_abs_diff(ha, hb), 1e-5f);
    EXPECT_LT(max_abs_diff(ca, cb), 1e-5f);
}

// bf16 (fused, the "auto" choice on AVX512-BF16/AMX CPUs) within cosine 0.999 of fp32 per
// text; "auto" resolves to one of the two.
TEST(Bert, Bf16PackedEmbeddingsWithinCosine0999OfFp32) {
    model::BertEmbedOptions bo;
    bo.dtype = "bf16";
    auto bf = model::BertEmbedder::load(test::golden("tiny-bert"), bo);
    auto fp = model::BertEmbedder::load(test::golden("tiny-bert"));
    EXPECT_EQ(bf->dtype(), "bf16");
    EXPECT_EQ(fp->dtype(), "fp32");
    std::vector<std::vector<int32_t>> rows;
    for (int n = 3; n <= 120; n += 13) {
        std::vector<int32_t> r{101};
        for (int k = 0; k < n; ++k) r.push_back(200 + (k * 37 + n) % 700);
        r.push_back(102);
        rows.push_back(r);
    }
    auto a = fp->embed_ids(rows), b = bf->embed_ids(rows);
    for (size_t r = 0; r < rows.size(); ++r) {
        double dot = 0;
        for (size_t k = 0; k < a[r].size(); ++k) dot += double(a[r][k]) * b[r][k];
        EXPECT_GE(dot, 0.999) << "row " << r << " (" << rows[r].size() << " tokens)";
    }
    bo.dtype = "auto";
    auto au = model::BertEmbedder::load(test::golden("tiny-bert"), bo);
    EXPECT_TRUE(au->dtype() == "bf16" || au->dtype() == "fp32") << au->dtype();
    bo.dtype = "fp16";
    EXPECT_THROW(model::BertEmbedder::load(test::golden("tiny-bert"), bo), UsageError);
}

TEST(Bert, MissingTensorsAndFoldersAreReported) {
    EXPECT_THROW(model::BertEmbedder::load("/nonexistent"), IoError);
    EXPECT_THROW(model::BertEmbedder::load(test::golden("tiny-qwen2")), ConfigError);   // model_type qwen2
}
