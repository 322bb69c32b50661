// train/optimizer.h: the fused AdamW and foreach clipping against libtorch's reference
// implementations (torch::optim::AdamW, torch::nn::utils::clip_grad_norm_), over several
// steps with weight decay, a changing learning rate, clipping that bites, a parameter whose
// gradient is missing for a step, and a state saved and restored halfway.
#include "pdsd/train/optimizer.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

using namespace pdsd;

namespace {

std::vector<at::Tensor> leaves(uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    std::vector<at::Tensor> v;
    for (auto shape : {std::vector<int64_t>{8, 64}, {64, 8}, {3}}) v.push_back(at::randn(shape, gen).requires_grad_(true));
    return v;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST(Optimizer, FusedAdamWAndClipFollowTorchOverSteps) {
    auto mine = leaves(1), ref = leaves(1);
    train::AdamW opt(mine, {1e-2, 0.9, 0.95, 1e-8, 0.1});
    torch::optim::AdamW topt(ref, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
    for (int step = 0; step < 6; ++step) {
        auto gen = at::detail::createCPUGenerator(100 + step);
        for (size_t i = 0; i < mine.size(); ++i) {
            if (step == 2 && i == 2) continue;  // no gradient this step: skipped by both, state kept
            at::Tensor g = at::randn(mine[i].sizes(), gen) * (step % 2 ? 10.0 : 0.1);  // odd steps clip
            mine[i].mutable_grad() = g.clone();
            ref[i].mutable_grad() = g.clone();
        }
        const double n1 = train::clip_grad_norm(mine, 1.0);
        const double n2 = torch::nn::utils::clip_grad_norm_(ref, 1.0);
        EXPECT_NEAR(n1, n2, 1e-5 * n2) << "step " << step;
        const double lr = 1e-2 * (1.0 - 0.1 * step);
        opt.set_lr(lr);
        for (auto& g : topt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        opt.step();
        topt.step();
        opt.zero_grad();
        topt.zero_grad(true);
        for (size_t i = 0; i < mine.size(); ++i) {
            EXPECT_LT(max_rel(mine[i].detach(), ref[i].detach()), 1e-6) << "step " << step << " param " << i;
            EXPECT_FALSE(mine[i].grad().defined());
        }
    }
    EXPECT_EQ(opt.steps(0), 6);
    EXPECT_EQ(opt.steps(2), 5);  // one step without a gradient

    // A restored state continues exactly like the original.
    auto copy = leaves(1);
    for (size_t i = 0; i < copy.size(); ++i) copy[i].detach().copy_(mine[i].detach());
    train::AdamW resumed(copy, {1e-2 * (1.0 - 0.1 * 5), 0.9, 0.95, 1e-8, 0.1});  // the last lr set
    for (size_t i = 0; i < copy.size(); ++i) resumed.load_state(i, opt.exp_avg(i), opt.exp_avg_sq(i), opt.steps(i));
    for (size_t i = 0; i < copy.size(); ++i) {
        at::Tensor g = at::full(copy[i].sizes(), 0.5);
        copy[i].mutable_grad() = g.clone();
        mine[i].mutable_grad() = g.clone();
    }
    opt.step();
    resumed.step();
    for (size_t i = 0; i < copy.size(); ++i) EXPECT_TRUE(at::equal(copy[i].detach(), mine[i].detach())) << i;
}

TEST(Optimizer, ClipWithoutLimitOnlyMeasures) {
    auto p = leaves(2);
    for (auto& t : p) t.mutable_grad() = at::full(t.sizes(), 3.0);
    const double n = train::clip_grad_norm(p, 0.0);
    EXPECT_NEAR(n, 3.0 * std::sqrt(8.0 * 64 + 64 * 8 + 3), 1e-4);
    EXPECT_EQ(p[0].grad()[0][0].item<float>(), 3.0f);  // untouched
    std::vector<at::Tensor> none = leaves(3);
    EXPECT_EQ(train::clip_grad_norm(none, 1.0), 0.0);
}
