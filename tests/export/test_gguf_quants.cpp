// GGUF block formats (src/export/gguf_quants.cpp) and llama.cpp's per-tensor type mix:
//  - bytes equal to reference quantizers on the vendored inputs (tests/fixtures/golden/
//    gguf-quants, made by tests/export/make_quant_goldens.py: gguf-py for Q4_0/Q5_0/Q5_1/Q8_0,
//    ggml's quantize_row_*_ref for Q4_K/Q5_K/Q6_K);
//  - dequantization equal to gguf-py's (an independent reader of each layout);
//  - round-trip error within a per-block bound, and RMS error ordered by bits;
//  - hand-made blocks with known bytes;
//  - the tensor -> type table of Qwen2.5-0.5B (24 layers, width 896) and of the tiny model.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/export/gguf.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::exporter;

namespace {

const uint32_t kAllBlockTypes[] = {GGML_Q4_0, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K};

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::vector<float> read_f32(const std::string& path) {
    std::string b = read_file(path);
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), v.size() * 4);
    return v;
}

std::vector<uint8_t> quantize(uint32_t t, const std::vector<float>& x) {
    std::vector<uint8_t> q(ggml_nbytes(t, x.size()));
    quantize_blocks(t, x.data(), static_cast<int64_t>(x.size()), q.data());
    return q;
}

std::vector<float> dequantize(uint32_t t, const std::vector<uint8_t>& q, size_t n) {
    std::vector<float> y(n);
    dequantize_blocks(t, q.data(), static_cast<int64_t>(n), y.data());
    return y;
}

// Index of the first differing block, or -1.
int64_t first_diff_block(uint32_t t, const std::vector<uint8_t>& a, const std::string& b) {
    const size_t bb = static_cast<size_t>(ggml_block_bytes(t));
    for (size_t i = 0; i < a.size(); ++i) {
        if (i >= b.size() || a[i] != static_cast<uint8_t>(b[i])) return static_cast<int64_t>(i / bb);
    }
    return a.size() == b.size() ? -1 : static_cast<int64_t>(a.size() / bb);
}

}  // namespace

TEST(GgufQuants, BlockSizesAreGgmls) {
    const std::map<uint32_t, std::pair<int64_t, int64_t>> want = {
        {GGML_Q4_0, {32, 18}}, {GGML_Q5_0, {32, 22}}, {GGML_Q5_1, {32, 24}}, {GGML_Q8_0, {32, 34}},
        {GGML_Q4_K, {256, 144}}, {GGML_Q5_K, {256, 176}}, {GGML_Q6_K, {256, 210}}};
    for (const auto& [t, vb] : want) {
        EXPECT_TRUE(ggml_is_block_quant(t));
        EXPECT_EQ(ggml_block_values(t), vb.first) << ggml_type_name(t);
        EXPECT_EQ(ggml_block_bytes(t), vb.second) << ggml_type_name(t);
    }
    EXPECT_FALSE(ggml_is_block_quant(GGML_BF16));
    EXPECT_EQ(ggml_nbytes(GGML_Q4_K, 896 * 512), 896u * 2 * 144);
    std::vector<float> x(100);
    std::vector<uint8_t> q(1000);
    EXPECT_THROW(quantize_blocks(GGML_Q4_K, x.data(), 100, q.data()), InternalError);  // not whole blocks
    EXPECT_THROW(quantize_blocks(GGML_BF16, x.data(), 32, q.data()), InternalError);
}

// The goldens: our bytes equal the reference quantizer's for every block, and our
// dequantization equals gguf-py's (to the bit: both compute the same float products).
TEST(GgufQuants, BytesEqualTheReferenceQuantizersOnTheVendoredInputs) {
    const std::string dir = test::golden("gguf-quants");
    std::vector<float> x = read_f32(dir + "/input.f32");
    ASSERT_EQ(x.size(), 2048u);
    int checked = 0;
    for (uint32_t t : kAllBlockTypes) {
        std::string name = lower(ggml_type_name(t));
        if (!fs::exists(dir + "/" + name + ".bin")) {
            ADD_FAILURE() << name << ".bin missing: run tests/export/make_quant_goldens.py (README there)";
            continue;
        }
        std::string ref = read_file(dir + "/" + name + ".bin");
        std::vector<uint8_t> q = quantize(t, x);
        ASSERT_EQ(q.size(), ref.size()) << name;
        EXPECT_EQ(first_diff_block(t, q, ref), -1) << name << ": first block that differs";
        std::vector<uint8_t> refq(ref.begin(), ref.end());
        std::vector<float> y = dequantize(t, refq, x.size());
        std::vector<float> py = read_f32(dir + "/" + name + ".deq.f32");
        ASSERT_EQ(py.size(), x.size());
        for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], py[i]) << name << " value " << i;
        ++checked;
    }
    EXPECT_EQ(checked, 7);
}

// Hand-made blocks whose bytes follow from the format alone.
TEST(GgufQuants, KnownBlocks) {
    // Q4_0: values (q - 8) * 0.5 with q = 0..15, 0..15: the largest magnitude is -4 (q = 0),
    // so d = -4 / -8 = 0.5 and every value is exact.
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[static_cast<size_t>(j)] = static_cast<float>(j % 16 - 8) * 0.5f;
    std::vector<uint8_t> q = quantize(GGML_Q4_0, x);
    uint16_t d;
    std::memcpy(&d, q.data(), 2);
    EXPECT_EQ(d, float_to_half(0.5f));
    for (int j = 0; j < 16; ++j) EXPECT_EQ(q[2 + static_cast<size_t>(j)], static_cast<uint8_t>(j | (j << 4))) << j;
    EXPECT_EQ(dequantize(GGML_Q4_0, q, 32), x);
    // Q5_0 on the same values: max -4 -> d = 0.25, q = x / d + 16 = 2 j.
    q = quantize(GGML_Q5_0, x);
    std::memcpy(&d, q.data(), 2);
    EXPECT_EQ(d, float_to_half(0.25f));
    uint32_t qh;
    std::memcpy(&qh, q.data() + 2, 4);
    for (int j = 0; j < 16; ++j) {
        int l = 2 * j;  // 0..30: the 5th bit is set from j = 8 on, in both halves
        EXPECT_EQ(q[6 + static_cast<size_t>(j)], static_cast<uint8_t>((l & 15) | ((l & 15) << 4))) << j;
        EXPECT_EQ((qh >> j) & 1u, l >= 16 ? 1u : 0u);
        EXPECT_EQ((qh >> (j + 16)) & 1u, l >= 16 ? 1u : 0u);
    }
    EXPECT_EQ(dequantize(GGML_Q5_0, q, 32), x);
    // All-zero blocks: Q4_0 stores d = 0 / -8 = -0 (fp16 0x8000, as ggml does) and q = 8 (0x88);
    // the K formats store nothing but zeros.
    std::vector<float> z(256, 0.f);
    q = quantize(GGML_Q4_0, z);
    for (size_t b = 0; b < 8; ++b) {
        EXPECT_EQ(q[b * 18], 0x00);
        EXPECT_EQ(q[b * 18 + 1], 0x80);
        for (size_t j = 2; j < 18; ++j) EXPECT_EQ(q[b * 18 + j], 0x88);
    }
    for (uint32_t t : {GGML_Q4_K, GGML_Q5_K, GGML_Q6_K}) {
        q = quantize(t, z);
        for (uint8_t c : q) ASSERT_EQ(c, 0) << ggml_type_name(t);
        for (float v : dequantize(t, q, 256)) ASSERT_EQ(v, 0.f);
    }
    // Q5_1 of a constant block: d = 0, m = the constant, exact.
    std::vector<float> c(32, 0.75f);
    EXPECT_EQ(dequantize(GGML_Q5_1, quantize(GGML_Q5_1, c), 32), c);
}

// Round trip on N(0, s) data of many scales. Per value the error stays below one quantization
// step of the block: absmax/8 (Q4_0), absmax/16 (Q5_0), (max-min)/31 (Q5_1), absmax/127 (Q8_0),
// and for the K formats one step of the super-block's widest sub-block at the coarsest scale
// the search tries (nmax + rmin levels over the range): range/14 (Q4_K), range/30.5 (Q5_K),
// absmax/31.1 (Q6_K); the 6/8-bit sub-block scales are rounded relative to the largest one,
// so a value can sit up to a full step (not half) off; Q6_K's symmetric levels (-32..31) clamp
// the side opposite the largest value by up to one step, and its 8-bit scale rounding (half of
// max_scale/128, times up to 32 levels) adds up to an eighth of a step: 1.125 steps; each plus
// fp16 slack.
// The RMS error relative to the data's RMS is ordered by bits per weight.
TEST(GgufQuants, RoundTripErrorStaysWithinOneStepAndShrinksWithBits) {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 1.f);
    const size_t n = 256 * 64;
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = nd(rng) * std::pow(10.f, static_cast<float>(static_cast<int>(i / 256 % 5) - 3));
    std::map<uint32_t, double> rel_rms;
    for (uint32_t t : kAllBlockTypes) {
        std::vector<float> y = dequantize(t, quantize(t, x), n);
        const size_t bv = static_cast<size_t>(ggml_block_values(t));
        const size_t span = bv == 256 && t != GGML_Q6_K ? 32 : bv == 256 ? 16 : 32;  // sub-block
        double worst = 0, se = 0, sx = 0;
        for (size_t b0 = 0; b0 < n; b0 += bv) {
            double widest = 0;  // step of the widest sub-block of this block
            for (size_t s0 = b0; s0 < b0 + bv; s0 += span) {
                float mn = x[s0], mx = x[s0], amax = 0;
                for (size_t i = s0; i < s0 + span; ++i) {
                    mn = std::min(mn, x[i]);
                    mx = std::max(mx, x[i]);
                    amax = std::max(amax, std::fabs(x[i]));
                }
                double range = std::max(0.f, mx) - std::min(0.f, mn);  // K formats: the min is <= 0
                double step = t == GGML_Q4_0 ? amax / 8.0 : t == GGML_Q5_0 ? amax / 16.0 : t == GGML_Q5_1 ? (mx - mn) / 31.0
                            : t == GGML_Q8_0 ? amax / 127.0 : t == GGML_Q4_K ? range / 14 : t == GGML_Q5_K ? range / 30.5 : amax / 31.1;
                widest = std::max(widest, step);
            }
            double amax_b = 0;
            for (size_t i = b0; i < b0 + bv; ++i) amax_b = std::max(amax_b, static_cast<double>(std::fabs(x[i])));
            double bound = widest * (t == GGML_Q6_K ? 1.125 : 1.0) * (1 + std::ldexp(1.0, -7)) + amax_b * std::ldexp(1.0, -9) + std::ldexp(1.0, -24);
            for (size_t i = b0; i < b0 + bv; ++i) {
                double err = std::fabs(static_cast<double>(x[i]) - y[i]);
                ASSERT_LE(err, bound) << ggml_type_name(t) << " value " << i;
                worst = std::max(worst, err / bound);
            }
        }
        for (size_t i = 0; i < n; ++i) {
            // relative to each super-block's scale, so that every scale counts alike
            double s = std::pow(10.0, static_cast<int>(i / 256 % 5) - 3);
            se += std::pow((x[i] - y[i]) / s, 2);
            sx += std::pow(x[i] / s, 2);
        }
        rel_rms[t] = std::sqrt(se / sx);
        EXPECT_GT(worst, 0.2) << ggml_type_name(t) << ": the bound is not vacuous";
        std::printf("%s: worst error %.3f of the bound, relative RMS error %.4f\n", ggml_type_name(t), worst, rel_rms[t]);
    }
    EXPECT_LT(rel_rms[GGML_Q5_0], rel_rms[GGML_Q4_0]);
    EXPECT_LT(rel_rms[GGML_Q4_K], rel_rms[GGML_Q4_0]);  // scales + mins per 32 beat one scale per 32
    EXPECT_LT(rel_rms[GGML_Q5_K], rel_rms[GGML_Q4_K]);
    EXPECT_LT(rel_rms[GGML_Q6_K], rel_rms[GGML_Q5_K]);
    EXPECT_LT(rel_rms[GGML_Q8_0], rel_rms[GGML_Q6_K]);
    EXPECT_LT(rel_rms[GGML_Q4_K], 0.12);  // N(0,1) with 4.5 bits per weight: 0.072 measured here
}

// Qwen2.5-0.5B: 24 layers, hidden 896, intermediate 4864, 2 KV heads of 64, vocab 151936,
// tied embeddings. 896 is not a multiple of 256, so every K-quant tensor of that width falls
// back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); ffn_down (rows of 4864 = 19 x 256) keeps
// its K type. use_more_bits over 24 layers: 0-2, 21-23 and 5, 8, 11, 14, 17, 20.
TEST(GgufQuants, QwenHalfBillionTypeTableFollowsLlamaQuantize) {
    struct T { std::string name; std::vector<uint64_t> ne; };
    std::vector<T> ts = {{"token_embd.weight", {896, 151936}}, {"output_norm.weight", {896}}};
    for (int l = 0; l < 24; ++l) {
        std::string b = "blk." + std::to_string(l) + ".";
        for (const char* s : {"attn_q.weight", "attn_output.weight"}) ts.push_back({b + s, {896, 896}});
        for (const char* s : {"attn_k.weight", "attn_v.weight"}) ts.push_back({b + s, {896, 128}});
        for (const char* s : {"ffn_gate.weight", "ffn_up.weight"}) ts.push_back({b + s, {896, 4864}});
        ts.push_back({b + "ffn_down.weight", {4864, 896}});
        for (const char* s : {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_norm.weight", "ffn_norm.weight"}) {
            ts.push_back({b + s, {896}});
        }
    }
    auto table = [&](GgufType g) {
        std::map<std::string, uint32_t> m;
        for (const auto& t : ts) m[t.name] = gguf_tensor_type(g, t.name, t.ne, 24, true).type;
        return m;
    };
    auto counts = [&](GgufType g) {
        std::map<std::string, int> c;
        for (const auto& [n, t] : table(g)) ++c[ggml_type_name(t)];
        return c;
    };
    auto m = table(GgufType::Q4_K_M);
    EXPECT_EQ(m["token_embd.weight"], GGML_Q8_0);  // tied output: Q6_K wanted, 896 % 256 -> Q8_0
    EXPECT_EQ(m["output_norm.weight"], GGML_F32);
    EXPECT_EQ(m["blk.0.attn_q.weight"], GGML_Q5_0);
    EXPECT_EQ(m["blk.0.attn_v.weight"], GGML_Q8_0);   // more bits: Q6_K -> Q8_0
    EXPECT_EQ(m["blk.3.attn_v.weight"], GGML_Q5_0);   // Q4_K -> Q5_0
    EXPECT_EQ(m["blk.5.attn_v.weight"], GGML_Q8_0);
    EXPECT_EQ(m["blk.0.ffn_down.weight"], GGML_Q6_K);
    EXPECT_EQ(m["blk.4.ffn_down.weight"], GGML_Q4_K);
    EXPECT_EQ(m["blk.20.ffn_down.weight"], GGML_Q6_K);
    EXPECT_EQ(m["blk.21.ffn_down.weight"], GGML_Q6_K);
    EXPECT_EQ(m["blk.19.ffn_down.weight"], GGML_Q4_K);
    EXPECT_EQ(m["blk.23.ffn_up.weight"], GGML_Q5_0);
    EXPECT_EQ(m["blk.7.attn_k.bias"], GGML_F32);
    EXPECT_EQ(counts(GgufType::Q4_K_M),
              (std::map<std::string, int>{{"F32", 121}, {"Q4_K", 12}, {"Q5_0", 132}, {"Q6_K", 12}, {"Q8_0", 13}}));
    EXPECT_EQ(counts(GgufType::Q5_K_M),
              (std::map<std::string, int>{{"F32", 121}, {"Q5_1", 132}, {"Q5_K", 12}, {"Q6_K", 12}, {"Q8_0", 13}}));
    EXPECT_EQ(counts(GgufType::Q6_K), (std::map<std::string, int>{{"F32", 121}, {"Q6_K", 24}, {"Q8_0", 145}}));
    EXPECT_EQ(counts(GgufType::Q4_0), (std::map<std::string, int>{{"F32", 121}, {"Q4_0", 168}, {"Q8_0", 1}}));
    EXPECT_EQ(counts(GgufType::Q5_0), (std::map<std::string, int>{{"F32", 121}, {"Q5_0", 168}, {"Q8_0", 1}}));
    EXPECT_EQ(counts(GgufType::Q8_0), (std::map<std::string, int>{{"F32", 121}, {"Q8_0", 169}}));
    EXPECT_EQ(counts(GgufType::BF16), (std::map<std::string, int>{{"BF16", 169}, {"F32", 121}}));
    // The wanted type is reported before the fallback.
    GgufTensorType v = gguf_tensor_type(GgufType::Q4_K_M, "blk.0.attn_v.weight", {896, 128}, 24, true);
    EXPECT_EQ(v.wanted, GGML_Q6_K);
    EXPECT_EQ(v.type, GGML_Q8_0);
}

// Untied output and widths that fit: output.weight Q6_K, token_embd keeps the base type;
// widths of no block at all fall to F16.
TEST(GgufQuants, UntiedOutputAndUnusualWidths) {
    EXPECT_EQ(gguf_tensor_type(GgufType::Q4_K_M, "output.weight", {1024, 5000}, 8, false).type, GGML_Q6_K);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q4_K_M, "token_embd.weight", {1024, 5000}, 8, false).type, GGML_Q4_K);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q4_0, "output.weight", {1024, 5000}, 8, false).type, GGML_Q6_K);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q4_0, "token_embd.weight", {1024, 5000}, 8, false).type, GGML_Q4_0);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q5_K_M, "blk.1.attn_q.weight", {1024, 1024}, 8, false).type, GGML_Q5_K);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q5_K_M, "blk.0.attn_v.weight", {1024, 256}, 8, false).type, GGML_Q6_K);
    EXPECT_EQ(gguf_tensor_type(GgufType::Q5_K_M, "blk.2.attn_v.weight", {1024, 256}, 8, false).type, GGML_Q5_K);
    // tiny-qwen2: rows of 176 (ffn_down) fit no block: F16 for every quantized type
    for (GgufType g : {GgufType::Q4_0, GgufType::Q5_0, GgufType::Q4_K_M, GgufType::Q5_K_M, GgufType::Q6_K}) {
        GgufTensorType t = gguf_tensor_type(g, "blk.1.ffn_down.weight", {176, 64}, 2, true);
        EXPECT_EQ(t.type, GGML_F16) << gguf_type_name(g);
        EXPECT_NE(t.wanted, GGML_F16);
    }
    for (const char* s : {"q4_0", "Q5_0", "q4_k_m", "Q5_K_M", "q6_k"}) EXPECT_EQ(lower(gguf_type_name(parse_gguf_type(s))), lower(s));
    EXPECT_EQ(gguf_file_type(GgufType::Q4_K_M), 15u);
    EXPECT_EQ(gguf_file_type(GgufType::Q6_K), 18u);
}
