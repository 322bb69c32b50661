// Weight-only quantization (model/quant.h): the formats bit by bit against an independent
// scalar computation, every kernel set this CPU runs (avx512 / avx2 / scalar) against a plain
// reference (dequantize, then a float64 matmul) on odd shapes, and a whole quantized model
// against the same model holding the dequantized weights in fp32 (ATen path).
#include "pdsd/core/error.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/quant.h"

#include "test_util.h"

#include <torch/torch.h>

#include <c10/util/Half.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <tuple>

using namespace pdsd::model;

namespace {

at::Tensor randn(std::vector<int64_t> shape, double scale, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    return at::randn(shape, gen) * scale;
}

float half_round(float f) { return static_cast<float>(c10::Half(f)); }

// Restores the best kernel set after a test that forced another.
struct IsaGuard {
    ~IsaGuard() { quant::force_isa(quant::available_isas().front()); }
};

// Bound for an fp32 dot product of K terms against the float64 value: 1e-5 of sum |x_k w_k|
// (fp32 sums in any order stay near sqrt(K) * 6e-8 of it; 1e-5 would need a lost term to fail).
void expect_close(const at::Tensor& y, const at::Tensor& ref, const at::Tensor& absref, const std::string& what) {
    at::Tensor err = (y.to(at::kDouble) - ref).abs();
    at::Tensor bound = absref * 1e-5 + 1e-6;
    EXPECT_TRUE((err <= bound).all().item<bool>()) << what << ": max error " << err.max().item<double>() << ", max bound "
                                                  << bound.max().item<double>();
}

}  // namespace

TEST(Quant, ParseTypeAndSettings) {
    EXPECT_EQ(quant::parse_type(""), quant::Type::none);
    EXPECT_EQ(quant::parse_type("int8"), quant::Type::int8);
    EXPECT_EQ(quant::parse_type("int4"), quant::Type::int4);
    EXPECT_THROW(quant::parse_type("q4_k"), pdsd::UsageError);
    auto dir = std::filesystem::temp_directory_path() / ("pdsd-quant-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / "model_settings.yaml").string();
    EXPECT_EQ(quant::settings_quant(path), "");  // no file
    std::ofstream(path) << "llm_model_path: models/x\nquant: int4\n";
    EXPECT_EQ(quant::settings_quant(path), "int4");
    std::ofstream(path) << "llm_model_path: models/x\n";
    EXPECT_EQ(quant::settings_quant(path), "");
    std::ofstream(path) << "llm_model_path: models/x\nquant: int3\n";
    try {
        quant::settings_quant(path);
        ADD_FAILURE() << "no error for quant: int3";
    } catch (const pdsd::ConfigError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find(path), std::string::npos) << m;
        EXPECT_NE(m.find("line 2"), std::string::npos) << m;
        EXPECT_NE(m.find("int3"), std::string::npos) << m;
    }
    std::filesystem::remove_all(dir);
}

// Q8_0: d = fp16(max|w| / 127) per group of 32, q = clamp(round(w / d), -127, 127), the row
// padded with zeros to a multiple of 32; dequantize gives d * q exactly.
TEST(Quant, Int8FormatIsQ8_0) {
    at::Tensor w = randn({7, 75}, 0.05, 1);
    w[3].narrow(0, 32, 32).zero_();  // an all-zero group: d = 0, q = 0
    w[5][70] = 3.0;                  // an outlier in the last (partial) group
    quant::QuantWeight q = quant::quantize(w, quant::Type::int8);
    ASSERT_EQ(q.kp, 96);
    ASSERT_EQ(q.q.sizes(), (at::IntArrayRef{7, 96}));
    ASSERT_EQ(q.scale.sizes(), (at::IntArrayRef{7, 3}));
    at::Tensor deq = quant::dequantize(q);
    ASSERT_EQ(deq.sizes(), w.sizes());
    auto wa = w.accessor<float, 2>();
    auto qa = q.q.accessor<int8_t, 2>();
    auto da = deq.accessor<float, 2>();
    for (int64_t r = 0; r < 7; ++r) {
        for (int64_t g = 0; g < 3; ++g) {
            float amax = 0;
            for (int64_t k = g * 32; k < std::min<int64_t>(75, g * 32 + 32); ++k) amax = std::max(amax, std::fabs(wa[r][k]));
            const float d = half_round(amax / 127.0f);
            ASSERT_EQ(static_cast<float>(q.scale[r][g].item<at::Half>()), d) << r << "," << g;
            for (int64_t k = g * 32; k < g * 32 + 32; ++k) {
                if (k >= 75) {
                    EXPECT_EQ(qa[r][k], 0) << "padding " << r << "," << k;
                    continue;
                }
                const float expect = d > 0 ? std::min(127.0f, std::max(-127.0f, std::nearbyint(wa[r][k] / d))) : 0.0f;
                EXPECT_EQ(qa[r][k], static_cast<int8_t>(expect)) << r << "," << k;
                EXPECT_EQ(da[r][k], d * static_cast<float>(qa[r][k]));
                EXPECT_LE(std::fabs(da[r][k] - wa[r][k]), d * 0.5f * (1 + 1e-3f) + 1e-7f) << r << "," << k;
            }
        }
    }
}

// int4: byte j of a group holds element j (low nibble) and j + 16 (high); dequantize gives
// d q + m exactly; (d, m) are refitted, never worse (squared error per group) than plain
// min/max quantization with the same fp16 rounding.
TEST(Quant, Int4FormatNibblesAndErrorNoWorseThanMinMax) {
    at::Tensor w = randn({5, 70}, 0.05, 2);
    w[1].narrow(0, 0, 32).fill_(0.25);  // a constant group
    quant::QuantWeight q = quant::quantize(w, quant::Type::int4);
    ASSERT_EQ(q.kp, 96);
    ASSERT_EQ(q.q.sizes(), (at::IntArrayRef{5, 48}));
    at::Tensor deq = quant::dequantize(q);
    auto wa = w.accessor<float, 2>();
    auto qa = q.q.accessor<uint8_t, 2>();
    auto da = deq.accessor<float, 2>();
    for (int64_t r = 0; r < 5; ++r) {
        for (int64_t g = 0; g < 3; ++g) {
            const float d = static_cast<float>(q.scale[r][g].item<at::Half>()), m = static_cast<float>(q.min[r][g].item<at::Half>());
            const int64_t n = std::min<int64_t>(32, 70 - g * 32);
            float lo = wa[r][g * 32], hi = lo;
            for (int64_t i = 0; i < n; ++i) lo = std::min(lo, wa[r][g * 32 + i]), hi = std::max(hi, wa[r][g * 32 + i]);
            const float d0 = half_round((hi - lo) / 15.0f), m0 = half_round(lo);
            double err = 0, err0 = 0;
            for (int64_t i = 0; i < n; ++i) {
                const int64_t k = g * 32 + i;
                const uint8_t b = qa[r][g * 16 + i % 16];
                const int v = i < 16 ? (b & 0x0F) : (b >> 4);
                EXPECT_EQ(da[r][k], d * static_cast<float>(v) + m) << r << "," << k;
                const float q0 = d0 > 0 ? std::min(15.0f, std::max(0.0f, std::nearbyint((wa[r][k] - m0) / d0))) : 0.0f;
                err += std::pow(da[r][k] - wa[r][k], 2.0);
                err0 += std::pow(d0 * q0 + m0 - wa[r][k], 2.0);
            }
            EXPECT_LE(err, err0 * (1 + 1e-6) + 1e-12) << r << "," << g;
        }
    }
    EXPECT_LT((deq[1].narrow(0, 0, 32) - 0.25).abs().max().item<float>(), 1e-3);
}

// Every kernel set against dequantize + float64 matmul: rows 1..8 (streamed) and 13 (through
// ATen), N with a tail of 1..3 rows below the 4-row block, K not a multiple of 32; biases,
// SiLU * up and the residual add; fp32 and bf16 activations.
TEST(Quant, KernelsMatchDequantizedReference) {
    IsaGuard restore;
    torch::NoGradGuard ng;
    for (const std::string& isa : quant::available_isas()) {
        ASSERT_TRUE(quant::force_isa(isa));
        ASSERT_EQ(quant::isa(), isa);
        for (quant::Type type : {quant::Type::int8, quant::Type::int4}) {
            for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 64}, {1, 896, 131}, {2, 75, 67}, {3, 100, 130},
                                   {5, 4864, 9}, {8, 33, 257}, {13, 96, 70}, {1, 7, 3}, {100, 96, 70}}) {
                const std::string what = isa + " " + quant::type_name(type) + " M " + std::to_string(M) + " K " + std::to_string(K) +
                                         " N " + std::to_string(N);
                at::Tensor x = randn({M, K}, 1.0, 3), b = randn({N}, 0.1, 4), res = randn({M, N}, 1.0, 5);
                quant::QuantWeight wq = quant::quantize(randn({N, K}, 0.05, 6), type);
                quant::QuantWeight uq = quant::quantize(randn({N, K}, 0.05, 7), type);
                at::Tensor w = quant::dequantize(wq).to(at::kDouble), u = quant::dequantize(uq).to(at::kDouble);
                at::Tensor xd = x.to(at::kDouble);
                at::Tensor ref = at::matmul(xd, w.t()), aref = at::matmul(xd.abs(), w.abs().t());
                at::Tensor refu = at::matmul(xd, u.t()), arefu = at::matmul(xd.abs(), u.abs().t());
                auto ys = quant::linear(x, {&wq, &uq}, {b, at::Tensor()});
                ASSERT_EQ(ys.size(), 2u);
                ASSERT_EQ(ys[0].sizes(), (at::IntArrayRef{M, N}));
                ASSERT_EQ(ys[0].scalar_type(), at::kFloat);
                expect_close(ys[0], ref + b.to(at::kDouble), aref, what + " linear+bias");
                expect_close(ys[1], refu, arefu, what + " second weight");
                expect_close(quant::linear_add(x, wq, res), ref + res.to(at::kDouble), aref, what + " linear_add");
                // silu(g) u: the bound of g carried through silu (slope <= 1.1) times |u|, plus u's.
                at::Tensor s = quant::silu_mul(x, wq, uq).to(at::kDouble), sref = at::silu(ref) * refu;
                at::Tensor serr = (s - sref).abs(), sbound = (aref * 1.1 * refu.abs() + arefu * ref.abs()) * 1e-5 + 1e-6;
                EXPECT_TRUE((serr <= sbound).all().item<bool>()) << what << " silu_mul: max error " << serr.max().item<double>();
                // bf16 activations: the fp32 result rounded once (within one bf16 ulp of it).
                at::Tensor xb = x.to(at::kBFloat16);
                at::Tensor yb = quant::linear(xb.view({M, 1, K}), {&wq}, {b})[0];
                ASSERT_EQ(yb.sizes(), (at::IntArrayRef{M, 1, N}));
                ASSERT_EQ(yb.scalar_type(), at::kBFloat16);
                at::Tensor rb = at::matmul(xb.to(at::kDouble), w.t()) + b.to(at::kDouble);
                at::Tensor ulp = at::pow(2.0, at::floor(at::log2(rb.abs().clamp_min(1e-30))) - 7).clamp_min(1e-4);
                EXPECT_LE(((yb.view({M, N}).to(at::kDouble) - rb).abs() / ulp).max().item<double>(), 1.01) << what << " bf16";
            }
        }
    }
}

// The embedding lookup reads the quantized rows; autograd through quantized weights is refused.
TEST(Quant, RowsLookupAndNoAutograd) {
    quant::QuantWeight e = quant::quantize(randn({50, 40}, 0.05, 8), quant::Type::int8);
    at::Tensor ids = at::tensor({3, 49, 0, 3}, at::kLong).view({2, 2});
    at::Tensor rows = quant::dequantize_rows(e, ids, at::kFloat);
    ASSERT_EQ(rows.sizes(), (at::IntArrayRef{2, 2, 40}));
    EXPECT_TRUE(at::equal(rows.view({4, 40}), quant::dequantize(e).index_select(0, ids.view({4}))));
    EXPECT_THROW(quant::dequantize_rows(e, at::tensor({50}, at::kLong), at::kFloat), pdsd::ShapeError);
    at::Tensor x = randn({1, 40}, 1.0, 9).requires_grad_(true);
    EXPECT_THROW(quant::linear(x, {&e}, {}), pdsd::UsageError);
}

// The whole tiny model: with --quant its greedy tokens equal those of the same model holding
// the dequantized weights as fp32 parameters (ATen's linear, embedding and tied LM head), and
// its logits agree within fp32 summation order.
TEST(Quant, QuantizedModelMatchesDequantizedAtenModel) {
    torch::NoGradGuard ng;
    for (const char* type : {"int8", "int4"}) {
        LoadOptions o;
        o.dtype = "fp32";
        Generator gen = Generator::load(pdsd::test::golden("tiny-qwen2"), "cpu", "fp32");
        auto ref = std::make_shared<LoadedModel>(load_qwen2(pdsd::test::golden("tiny-qwen2"), o));
        EXPECT_GT(gen.quantize(type), 0);
        // The reference: each weight replaced by its dequantized value, as the same precision choice makes it.
        const quant::Type t = quant::parse_type(type);
        auto& qm = *gen.model().model;
        auto& rm = *ref->model;
        for (size_t i = 0; i < rm.model->layers.size(); ++i) {
            auto& qa = *qm.model->layers[i]->self_attn;
            auto& ra = *rm.model->layers[i]->self_attn;
            auto& qf = *qm.model->layers[i]->mlp;
            auto& rf = *rm.model->layers[i]->mlp;
            for (auto [q, r] : {std::pair{qa.q_proj, ra.q_proj}, {qa.k_proj, ra.k_proj}, {qa.v_proj, ra.v_proj}, {qa.o_proj, ra.o_proj},
                                {qf.gate_proj, rf.gate_proj}, {qf.up_proj, rf.up_proj}, {qf.down_proj, rf.down_proj}}) {
                ASSERT_TRUE(q->quant);
                EXPECT_EQ(q->quant->type, q.ptr() == qa.v_proj.ptr() ? quant::Type::int8 : t);
                EXPECT_TRUE(at::equal(quant::dequantize(*q->quant), quant::dequantize(quant::quantize(r->weight, q->quant->type))));
                r->weight.copy_(quant::dequantize(*q->quant));
                EXPECT_EQ(q->weight.sizes(), r->weight.sizes());  // the released parameter keeps its shape
            }
        }
        ASSERT_TRUE(qm.model->embed_tokens->quant);
        rm.model->embed_tokens->weight.copy_(quant::dequantize(*qm.model->embed_tokens->quant));
        Generator rgen(ref);
        GenerationOptions g;
        g.do_sample = false;
        g.max_new_tokens = 12;
        g.eos_token_id = std::vector<int64_t>{};
        for (const std::vector<int64_t>& prompt : {std::vector<int64_t>{5, 17, 300, 42}, std::vector<int64_t>{9, 1000, 3, 77, 8, 1, 2, 3, 4, 5, 6, 7}}) {
            EXPECT_EQ(gen.generate(prompt, g).tokens, rgen.generate(prompt, g).tokens) << type;
        }
        at::Tensor ids = at::tensor({5, 17, 300, 42, 9, 1000, 3, 77, 8, 1, 2, 3}, at::kLong).view({1, 12});
        at::Tensor a = qm.forward(ids).logits, b = rm.forward(ids).logits;  // 12 rows: the dequantized ATen path
        EXPECT_LT((a - b).abs().max().item<double>(), 1e-4) << type;
        KVCache c = KVCache::allocate(gen.model().config, 1, 16, qm.options());
        at::Tensor a1 = qm.forward(ids.narrow(1, 0, 1), {}, {}, &c).logits;  // 1 row: the streaming kernels
        EXPECT_LT((a1 - b.narrow(1, 0, 1)).abs().max().item<double>(), 1e-4) << type;
    }
}

// LoadOptions::quant: quantizing at load (the float weights read as views of the file in their
// stored dtype, never copied) gives the model that quantizing after a float load gives, with
// every parameter left in the compute dtype and no float projection left to read.
TEST(Quant, QuantizingAtLoadEqualsQuantizingAfterLoad) {
    torch::NoGradGuard ng;
    for (const char* type : {"int8", "int4"}) {
        LoadOptions o;
        o.dtype = "fp32";
        o.quant = type;
        auto at_load = std::make_shared<LoadedModel>(load_qwen2(pdsd::test::golden("tiny-qwen2"), o));
        EXPECT_GT(at_load->quant_bytes, 0);
        Generator after = Generator::load(pdsd::test::golden("tiny-qwen2"), "cpu", "fp32");
        EXPECT_EQ(after.quantize(type), at_load->quant_bytes);
        for (const auto& p : at_load->model->named_parameters()) {
            EXPECT_EQ(p.value().scalar_type(), at::kFloat) << p.key();
            if (quant::is_quantized_weight(p.key())) EXPECT_LE(p.value().storage().nbytes(), 4u) << p.key();
        }
        EXPECT_TRUE(quant::is_quantized_weight("model.layers.3.mlp.down_proj.weight"));
        EXPECT_FALSE(quant::is_quantized_weight("model.layers.3.mlp.down_proj.bias"));
        EXPECT_FALSE(quant::is_quantized_weight("model.norm.weight"));
        at::Tensor ids = at::tensor({5, 17, 300, 42, 9, 1000, 3, 77, 8, 1, 2, 3}, at::kLong).view({1, 12});
        EXPECT_TRUE(at::equal(at_load->model->forward(ids).logits, after.model().model->forward(ids).logits)) << type;
        GenerationOptions g;
        g.do_sample = false;
        g.max_new_tokens = 8;
        g.eos_token_id = std::vector<int64_t>{};
        Generator gl(at_load);
        EXPECT_EQ(gl.generate({5, 17, 300, 42}, g).tokens, after.generate({5, 17, 300, 42}, g).tokens) << type;
    }
    LoadOptions bad;
    bad.quant = "int3";
    EXPECT_THROW(load_qwen2(pdsd::test::golden("tiny-qwen2"), bad), pdsd::UsageError);
}
