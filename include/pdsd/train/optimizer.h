// AdamW and gradient clipping for the LoRA trainer, each one fused ATen call per optimizer
// step instead of a handful of kernels per parameter.
//
// The update is torch.optim.AdamW's (decoupled weight decay p *= 1 - lr * wd, bias-corrected
// moments, eps added to the corrected sqrt(v)), computed by at::_fused_adamw_: the kernel
// torch.optim.AdamW(fused=True) runs, on CPU and CUDA. libtorch's C++ torch::optim::AdamW
// loops over parameters with ~10 ops each: for Qwen2.5-0.5B LoRA on q,v (96 tensors) that is
// ~1,000 kernel launches per step on a GPU. Clipping is torch's foreach clip_grad_norm_:
// one _foreach_norm, one _foreach_mul_.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace pdsd::train {

struct AdamWOptions {
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;
};

class AdamW {
public:
    // params: fp32 leaf tensors on one device; their moments start at zero, step 0.
    AdamW(std::vector<at::Tensor> params, AdamWOptions options);

    void set_lr(double lr) { options_.lr = lr; }
    // One update of every parameter that has a gradient (the others keep their state, as in
    // torch, where they are skipped).
    void step();
    // Drops the gradients (torch's zero_grad(set_to_none=True)).
    void zero_grad();

    size_t size() const { return params_.size(); }
    // State of parameter i: fp32 moments shaped like it, and its number of updates so far.
    const at::Tensor& exp_avg(size_t i) const { return exp_avg_[i]; }
    const at::Tensor& exp_avg_sq(size_t i) const { return exp_avg_sq_[i]; }
    int64_t steps(size_t i) const;
    // Restores parameter i's state from a checkpoint (copied to the parameter's device).
    void load_state(size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t steps);

private:
    std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_, step_;  // step_: fp32 0-dim on the device
    AdamWOptions options_;
};

// Total 2-norm of the gradients that are defined, and when max_norm > 0 scales them by
// min(1, max_norm / (norm + 1e-6)) in place (torch.nn.utils.clip_grad_norm_). Returns the norm
// before clipping (what HF logs as grad_norm); one host synchronisation.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace pdsd::train
