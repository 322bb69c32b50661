// QLoRA's frozen base (model/qlora_base.h) on the golden tiny Qwen2, for both storages: every
// decoder projection holds its 4-bit / 8-bit copy, its float weight is released (shape kept,
// one element of storage), and the model computes exactly what the float model computes after
// each weight is replaced by its dequantized value, forward and backward. And the keys'
// validation.
#include "pdsd/core/error.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/qlora_base.h"
#include "pdsd/model/qwen2.h"

#include "test_util.h"

#include <torch/torch.h>

#include <string>
#include <utility>

using namespace pdsd;
using namespace pdsd::model;

namespace {

// The dequantized weight a quantized projection computes with (fp32).
at::Tensor stored_weight(const Proj& p) {
    if (p->nf4) return nf4::dequantize(*p->nf4, at::kFloat);
    if (p->int8) return int8_rows::dequantize(*p->int8, at::kFloat);
    return {};
}

void check_base(const qlora::BaseQuant& spec, double bytes_per_weight, double tol) {
    LoadOptions o;
    o.dtype = "fp32";
    LoadedModel q = load_qwen2(test::golden("tiny-qwen2"), o), r = load_qwen2(test::golden("tiny-qwen2"), o);
    int64_t float_bytes = 0, params = 0;
    const int64_t bytes = qlora::quantize_base(*q.model, spec, &float_bytes);
    for (size_t i = 0; i < r.model->model->layers.size(); ++i) {
        auto& qa = *q.model->model->layers[i]->self_attn;
        auto& ra = *r.model->model->layers[i]->self_attn;
        auto& qf = *q.model->model->layers[i]->mlp;
        auto& rf = *r.model->model->layers[i]->mlp;
        for (auto [qp, rp] : {std::pair{qa.q_proj, ra.q_proj}, {qa.k_proj, ra.k_proj}, {qa.v_proj, ra.v_proj}, {qa.o_proj, ra.o_proj},
                              {qf.gate_proj, rf.gate_proj}, {qf.up_proj, rf.up_proj}, {qf.down_proj, rf.down_proj}}) {
            ASSERT_EQ(static_cast<bool>(qp->nf4), spec.bits == 4);
            ASSERT_EQ(static_cast<bool>(qp->int8), spec.bits == 8);
            EXPECT_EQ(qp->weight.sizes(), rp->weight.sizes());
            EXPECT_LE(qp->weight.storage().nbytes(), 4u);
            torch::NoGradGuard ng;
            params += rp->weight.numel();
            rp->weight.copy_(stored_weight(qp));
        }
    }
    EXPECT_EQ(float_bytes, params * 4);
    EXPECT_NEAR(static_cast<double>(bytes) / static_cast<double>(params), bytes_per_weight, tol);
    at::Tensor ids = at::tensor({5, 17, 300, 42, 9, 1000, 3, 77}, at::kLong).view({1, 8});
    at::Tensor a = q.model->forward(ids).logits, b = r.model->forward(ids).logits;
    EXPECT_TRUE(at::equal(a, b));
    // The gradient reaching the (frozen) input embeddings flows through the quantized projections.
    q.model->model->embed_tokens->weight.set_requires_grad(true);
    r.model->model->embed_tokens->weight.set_requires_grad(true);
    q.model->forward(ids).logits.pow(2).mean().backward();
    r.model->forward(ids).logits.pow(2).mean().backward();
    at::Tensor gq = q.model->model->embed_tokens->weight.grad(), gr = r.model->model->embed_tokens->weight.grad();
    ASSERT_TRUE(gq.defined() && gr.defined());
    EXPECT_LT((gq - gr).abs().max().item<double>(), 1e-7 + 1e-5 * gr.abs().max().item<double>());
}

}  // namespace

TEST(QloraBase, FourBitBaseEqualsTheDequantizedFloatModel) {
    // 4 bits + an 8-bit scale per 64 + an fp32 scale per 256 blocks (ceil), as bitsandbytes.
    check_base(qlora::parse(4, "nf4", true), (4.0 + 8.0 / 64) / 8, 0.01);
}

TEST(QloraBase, EightBitBaseEqualsTheDequantizedFloatModel) {
    // 1 byte a weight + one fp32 SCB a row (the tiny model's K is 64..256: 4/K under 7%).
    check_base(qlora::parse(8, "nf4", true), 1.0, 0.07);
}

TEST(QloraBase, KeysParseAsLlamaFactoryReadsThem) {
    EXPECT_EQ(qlora::parse(0, "nf4", true).bits, 0);
    EXPECT_EQ(qlora::parse(0, "nf4", true).describe(), "");
    EXPECT_EQ(qlora::parse(4, "fp4", false).describe(), "4-bit fp4");
    EXPECT_EQ(qlora::parse(4, "nf4", true).describe(), "4-bit nf4, double quantization");
    // 8 bits: quantization_type and double_quantization are 4-bit keys, ignored whatever they hold.
    EXPECT_EQ(qlora::parse(8, "int4", false).describe(), "8-bit int8 rows");
    EXPECT_DOUBLE_EQ(qlora::parse(8, "fp4", false).bytes_per_weight(896), 1.0 + 4.0 / 896);
    EXPECT_DOUBLE_EQ(qlora::parse(4, "nf4", false).bytes_per_weight(896), 4.5 / 8);
    for (int64_t bits : {1, 2, 3, 5, 16}) {
        try {
            qlora::parse(bits, "nf4", true);
            ADD_FAILURE() << "accepted quantization_bit " << bits;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("quantization_bit"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("4 | 8"), std::string::npos) << e.what();
        }
    }
    EXPECT_THROW(qlora::parse(4, "int4", true), ConfigError);
}
