// The AVX512_BF16 decode kernels (model/cpu_decode.h) against the unfused ATen ops they stand in
// for, on shapes with row and K tails (N % 4 != 0, K % 32 != 0), 1..8 input rows, with and
// without bias. Skipped (not passed) on CPUs without AVX512_BF16.
#include "pdsd/model/cpu_decode.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/loader.h"

#include "test_util.h"

#include <torch/torch.h>

#include <tuple>

using namespace pdsd::model;

namespace {

at::Tensor randn_bf16(std::vector<int64_t> shape, double scale, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    return (at::randn(shape, gen) * scale).to(at::kBFloat16);
}

// Largest |a - b| in units of b's bf16 spacing (an ulp of the reference at each element). The
// unit is at least 1e-4: near zero, after cancellation, the fp32 sums' own rounding (order
// dependent, ~1e-5 for K = 4864) is larger than a bf16 ulp of the result.
double max_ulps(const at::Tensor& a, const at::Tensor& b) {
    at::Tensor bf = b.to(at::kFloat);
    at::Tensor ulp = at::pow(2.0, at::floor(at::log2(bf.abs().clamp_min(1e-30))) - 7).clamp_min(1e-4);  // 8 significant bits
    return ((a.to(at::kFloat) - bf).abs() / ulp).max().item<double>();
}

#define SKIP_WITHOUT_BF16() \
    if (!cpu_decode::cpu_supported()) GTEST_SKIP() << "CPU without AVX512_BF16 (or PDSD_CPU_DECODE=0)"

}  // namespace

// Exact fp32 sums of the bf16 products, rounded once, can differ from oneDNN's (which sums in
// another order) by one bf16 ulp; more would mean a wrong product or a lost term.
TEST(CpuDecode, LinearMatchesAtLinearWithinOneUlp) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 64}, {1, 896, 1152}, {2, 176, 67},
                           {3, 100, 130}, {5, 4864, 9}, {8, 64, 257}, {4, 31, 4}}) {
        at::Tensor x = randn_bf16({M, K}, 1.0, 1), w = randn_bf16({N, K}, 0.05, 2), b = randn_bf16({N}, 0.1, 3);
        at::Tensor ref = at::linear(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat));  // exact-ish fp32
        ASSERT_TRUE(cpu_decode::applies(x, w));
        at::Tensor y = cpu_decode::linear(x, {w}, {b})[0];
        ASSERT_EQ(y.sizes(), (at::IntArrayRef{M, N}));
        EXPECT_LE(max_ulps(y, ref.to(at::kBFloat16)), 1.0) << "M " << M << " K " << K << " N " << N;
        at::Tensor nobias = cpu_decode::linear(x, {w}, {at::Tensor()})[0];
        EXPECT_LE(max_ulps(nobias, at::linear(x.to(at::kFloat), w.to(at::kFloat)).to(at::kBFloat16)), 1.0);
    }
}

TEST(CpuDecode, SeveralWeightsInOneCallEqualSeparateCalls) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    at::Tensor x = randn_bf16({1, 1, 64}, 1.0, 4);  // (B, T, K): leading dims are kept
    at::Tensor q = randn_bf16({64, 64}, 0.1, 5), k = randn_bf16({30, 64}, 0.1, 6), v = randn_bf16({30, 64}, 0.1, 7);
    at::Tensor bq = randn_bf16({64}, 0.1, 8), bk = randn_bf16({30}, 0.1, 9);
    auto outs = cpu_decode::linear(x, {q, k, v}, {bq, bk, at::Tensor()});
    ASSERT_EQ(outs.size(), 3u);
    EXPECT_EQ(outs[1].sizes(), (at::IntArrayRef{1, 1, 30}));
    EXPECT_TRUE(at::equal(outs[0], cpu_decode::linear(x, {q}, {bq})[0]));
    EXPECT_TRUE(at::equal(outs[1], cpu_decode::linear(x, {k}, {bk})[0]));
    EXPECT_TRUE(at::equal(outs[2], cpu_decode::linear(x, {v}, {})[0]));
}

// silu_mul and linear_add round where the unfused bf16 ops round, so they equal those ops
// applied to the kernel's own linear outputs bit for bit.
TEST(CpuDecode, FusedEpiloguesRoundLikeTheUnfusedOps) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    for (int64_t M : {1, 3, 8}) {
        at::Tensor x = randn_bf16({M, 64}, 1.0, 10), wg = randn_bf16({176, 64}, 0.2, 11), wu = randn_bf16({176, 64}, 0.2, 12);
        at::Tensor g = cpu_decode::linear(x, {wg}, {})[0], u = cpu_decode::linear(x, {wu}, {})[0];
        at::Tensor a = cpu_decode::silu_mul(x, wg, wu);
        at::Tensor a_ref = at::silu(g) * u;  // bf16 ops: each rounds its result
        EXPECT_LE(max_ulps(a, a_ref), 1.0) << "silu within an ulp (exp implementations differ)";
        EXPECT_GT(at::eq(a, a_ref).to(at::kFloat).mean().item<double>(), 0.95);

        at::Tensor wd = randn_bf16({64, 176}, 0.05, 13), r = randn_bf16({M, 64}, 1.0, 14);
        at::Tensor y = cpu_decode::linear_add(a, wd, r);
        EXPECT_TRUE(at::equal(y, r + cpu_decode::linear(a, {wd}, {})[0])) << "M " << M;
    }
}

// The per-token ops between the projections, against the bf16 ATen ops of qwen2.cpp's
// general path (HF's formulas).
TEST(CpuDecode, RmsNormAndRotaryRoundLikeTheAtenOps) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    at::Tensor x = randn_bf16({3, 1, 896}, 2.0, 20), w = randn_bf16({896}, 1.0, 21);
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor ref = w * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
    at::Tensor y = cpu_decode::rms_norm(x, w, 1e-6);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_LE(max_ulps(y, ref), 1.0) << "the fp32 mean may round differently";
    EXPECT_GT(at::eq(y, ref).to(at::kFloat).mean().item<double>(), 0.99);

    for (int64_t hd : {16, 64, 128}) {  // tiny fixture, Qwen2.5-0.5B, Qwen2.5-7B
        const int64_t R = 2, heads = 3;
        at::Tensor q = randn_bf16({R, heads * hd}, 1.0, 22), c = randn_bf16({R, hd}, 1.0, 23), sn = randn_bf16({R, hd}, 1.0, 24);
        at::Tensor q4 = q.view({R, heads, hd});
        at::Tensor rot = at::cat({-q4.narrow(-1, hd / 2, hd / 2), q4.narrow(-1, 0, hd / 2)}, -1);
        at::Tensor expect = (q4 * c.unsqueeze(1) + rot * sn.unsqueeze(1)).reshape({R, heads * hd});
        at::Tensor got = q.clone();
        cpu_decode::rotary_(got, hd, c, sn);
        EXPECT_TRUE(at::equal(got, expect)) << "head_dim " << hd;
    }
}

// Single-query attention against SDPA in fp32 (exact softmax) over a cache longer than the
// filled part, with grouped heads; one bf16 rounding of the result is the only difference.
TEST(CpuDecode, AttentionMatchesSdpaOverTheFilledCache) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    for (auto [B, nh, nkv, hd, L] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{1, 14, 2, 64, 37}, {2, 4, 2, 16, 5},
                                     {1, 28, 4, 128, 300}, {3, 2, 2, 64, 1}, {1, 6, 1, 24, 9}, {1, 10, 2, 32, 70}}) {  // hd 24: plain loops
        const int64_t maxlen = L + 7;
        at::Tensor q = randn_bf16({B, nh * hd}, 1.0, 30);
        at::Tensor k = randn_bf16({B, nkv, maxlen, hd}, 1.0, 31), v = randn_bf16({B, nkv, maxlen, hd}, 1.0, 32);
        at::Tensor out = cpu_decode::attention(q, k, v, L, nh);
        ASSERT_EQ(out.sizes(), (at::IntArrayRef{B, nh * hd}));
        at::Tensor qf = q.view({B, nh, 1, hd}).to(at::kFloat);
        at::Tensor kf = k.narrow(2, 0, L).to(at::kFloat).repeat_interleave(nh / nkv, 1);
        at::Tensor vf = v.narrow(2, 0, L).to(at::kFloat).repeat_interleave(nh / nkv, 1);
        at::Tensor ref = at::scaled_dot_product_attention(qf, kf, vf).view({B, nh * hd});
        EXPECT_LE(max_ulps(out, ref.to(at::kBFloat16)), 1.0) << "B " << B << " nh " << nh << " hd " << hd << " L " << L;
    }
}

TEST(CpuDecode, AppliesOnlyToSmallBf16CpuInputs) {
    SKIP_WITHOUT_BF16();
    at::Tensor w = randn_bf16({8, 64}, 0.1, 15);
    EXPECT_TRUE(cpu_decode::applies(randn_bf16({2, 4, 64}, 1, 16), w));   // 8 rows
    EXPECT_FALSE(cpu_decode::applies(randn_bf16({3, 3, 64}, 1, 16), w));  // 9 rows: oneDNN
    EXPECT_FALSE(cpu_decode::applies(at::randn({1, 64}), w.to(at::kFloat)));
    EXPECT_FALSE(cpu_decode::applies(randn_bf16({1, 32}, 1, 17), w));     // K mismatch
    at::Tensor wg = w.clone().requires_grad_(true);
    EXPECT_FALSE(cpu_decode::applies(randn_bf16({1, 64}, 1, 18), wg));    // autograd needs ATen
}

// The whole model: bf16 greedy decoding with the kernels gives the tokens of the same model
// with them off (PDSD_CPU_DECODE=0 path, i.e. at::linear per projection), and close logits.
TEST(CpuDecode, Bf16ModelDecodeMatchesAtLinear) {
    SKIP_WITHOUT_BF16();
    torch::NoGradGuard ng;
    LoadOptions o;
    o.dtype = "bf16";
    auto lm = std::make_shared<LoadedModel>(load_qwen2(pdsd::test::golden("tiny-qwen2"), o));
    at::Tensor ids = at::tensor({5, 17, 300, 42, 9, 1000}, at::kLong).view({1, 6});
    // One decode row per step goes through the kernels; the unfused reference forces at::linear
    // by running every step as a 9-row batch (above kMaxRows) of the same row.
    KVCache c1 = KVCache::allocate(lm->config, 1, 16, lm->model->options());
    KVCache c9 = KVCache::allocate(lm->config, 9, 16, lm->model->options());
    ForwardOptions fo;
    fo.last_logits_only = true;
    at::Tensor a = lm->model->forward(ids, {}, {}, &c1, fo).logits;
    at::Tensor b = lm->model->forward(ids.expand({9, 6}), {}, {}, &c9, fo).logits;
    for (int step = 0; step < 6; ++step) {
        at::Tensor next = a.select(1, 0).argmax(-1).view({1, 1});
        EXPECT_TRUE(at::equal(next.view({1}), b.select(1, 0).argmax(-1).narrow(0, 0, 1))) << "step " << step;
        a = lm->model->forward(next, {}, {}, &c1, fo).logits;            // 1 row: kernels
        b = lm->model->forward(next.expand({9, 1}), {}, {}, &c9, fo).logits;  // 9 rows: at::linear
        EXPECT_LT((a.to(at::kFloat) - b.narrow(0, 0, 1).to(at::kFloat)).abs().max().item<double>(), 0.05);
    }
}

// Batched decode rows go through the same kernels row by row (each row's sums in the same
// order whatever the batch), so a batch of equal-length prompts gives every row exactly the
// tokens it gets alone.
TEST(CpuDecode, Bf16BatchRowsEqualEachRowAlone) {
    SKIP_WITHOUT_BF16();
    LoadOptions o;
    o.dtype = "bf16";
    Generator gen(std::make_shared<LoadedModel>(load_qwen2(pdsd::test::golden("tiny-qwen2"), o)));
    GenerationOptions g;
    g.do_sample = false;
    g.max_new_tokens = 10;
    g.eos_token_id = std::vector<int64_t>{};
    const std::vector<std::vector<int64_t>> prompts = {{5, 17, 300, 42}, {9, 1000, 3, 77}, {1, 2, 3, 4}};
    auto batch = gen.generate_batch(prompts, g);
    ASSERT_EQ(batch.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batch[i].tokens, gen.generate(prompts[i], g).tokens) << "row " << i;
}
