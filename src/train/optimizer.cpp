// See optimizer.h.
#include "pdsd/train/optimizer.h"

#include "pdsd/core/error.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/clamp_max.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <string>

namespace pdsd::train {

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
    for (const auto& p : params_) {
        // fp32 master weights; bf16 for pure_bf16 (moments then in bf16 too, as torch keeps them).
        if ((p.scalar_type() != at::kFloat && p.scalar_type() != at::kBFloat16) || p.scalar_type() != params_.front().scalar_type() ||
            p.device() != params_.front().device()) {
            throw InternalError("AdamW: parameters must be fp32 (or all bf16) tensors on one device");
        }
        exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
        exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
        step_.push_back(at::zeros({}, p.options().dtype(at::kFloat)));  // the fused kernel reads steps on the parameters' device
    }
}

void AdamW::step() {
    std::vector<at::Tensor> p, g, m, v, s;
    for (size_t i = 0; i < params_.size(); ++i) {
        if (!params_[i].grad().defined()) continue;
        p.push_back(params_[i]);
        g.push_back(params_[i].grad());
        m.push_back(exp_avg_[i]);
        v.push_back(exp_avg_sq_[i]);
        s.push_back(step_[i]);
    }
    if (p.empty()) return;
    at::NoGradGuard no_grad;
    at::_foreach_add_(s, 1);  // torch increments the steps, then the kernel reads them
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, options_.lr, options_.beta1, options_.beta2,
                      options_.weight_decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
}

void AdamW::zero_grad() {
    for (auto& p : params_) p.mutable_grad() = at::Tensor();
}

int64_t AdamW::steps(size_t i) const { return static_cast<int64_t>(step_.at(i).item<float>()); }

void AdamW::load_state(size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t steps) {
    if (exp_avg.sizes() != params_.at(i).sizes() || exp_avg_sq.sizes() != params_[i].sizes()) {
        throw InternalError("AdamW::load_state: moments shaped unlike parameter " + std::to_string(i));
    }
    at::NoGradGuard no_grad;
    exp_avg_[i].copy_(exp_avg);
    exp_avg_sq_[i].copy_(exp_avg_sq);
    step_[i].fill_(static_cast<double>(steps));
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
    std::vector<at::Tensor> grads;
    for (const auto& p : params) {
        if (p.grad().defined()) grads.push_back(p.grad());
    }
    if (grads.empty()) return 0.0;
    at::NoGradGuard no_grad;
    at::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);  // 0-dim
    if (max_norm > 0) at::_foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_max(1.0));
    return total.item<double>();
}

}  // namespace pdsd::train
