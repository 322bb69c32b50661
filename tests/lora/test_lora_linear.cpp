// LoRA Linear: PEFT init, zero B leaves the base output bit for bit, scaling.
#include "pdsd/lora/lora_linear.h"

#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include <cmath>

using namespace pdsd::lora;

TEST(LoraLinear, InitIsKaimingUniformAndZeroB) {
    at::manual_seed(0);
    LoraLinear l(896, 128, LoraHyper{8, 16, 0.0, false}, at::TensorOptions().dtype(at::kFloat));
    EXPECT_EQ(l->lora_A->weight.sizes(), (std::vector<int64_t>{8, 896}));
    EXPECT_EQ(l->lora_B->weight.sizes(), (std::vector<int64_t>{128, 8}));
    const double bound = 1.0 / std::sqrt(896.0);
    EXPECT_LE(l->lora_A->weight.abs().max().item<double>(), bound);
    EXPECT_GT(l->lora_A->weight.abs().max().item<double>(), 0.9 * bound);
    EXPECT_EQ(l->lora_B->weight.abs().max().item<double>(), 0.0);
    EXPECT_TRUE(l->lora_A->weight.requires_grad());
    EXPECT_EQ(l->named_parameters().size(), 2u);
    EXPECT_TRUE(l->named_parameters().contains("lora_A.weight"));
    EXPECT_TRUE(l->named_parameters().contains("lora_B.weight"));
}

TEST(LoraLinear, ZeroBIsBitExactAndScalingApplies) {
    at::manual_seed(1);
    LoraLinear l(16, 8, LoraHyper{4, 8, 0.0, false}, at::TensorOptions().dtype(at::kFloat));
    at::Tensor x = at::randn({2, 3, 16}), base = at::randn({2, 3, 8});
    EXPECT_TRUE(at::equal(l->apply(x, base), base));
    at::Tensor bb = at::randn({2, 3, 8}).to(at::kBFloat16);
    EXPECT_TRUE(at::equal(l->apply(x.to(at::kBFloat16), bb), bb));
    {
        at::NoGradGuard g;
        l->lora_B->weight.normal_();
    }
    at::Tensor want = base + at::linear(at::linear(x, l->lora_A->weight), l->lora_B->weight) * 2.0;  // 8 / 4
    EXPECT_TRUE(at::allclose(l->apply(x, base), want, 1e-6, 1e-6));
    EXPECT_DOUBLE_EQ((LoraHyper{16, 32, 0, true}).scaling(), 8.0);  // rslora: alpha / sqrt(r)
}
