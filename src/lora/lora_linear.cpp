// LoRA Linear; see lora_linear.h.
#include "pdsd/lora/lora_linear.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>

namespace pdsd::lora {

LoraWeightImpl::LoraWeightImpl(int64_t out, int64_t in, at::TensorOptions options) {
    weight = register_parameter("weight", at::zeros({out, in}, options), true);
}

double LoraHyper::scaling() const {
    return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

LoraLinearImpl::LoraLinearImpl(int64_t in, int64_t out, const LoraHyper& h, at::TensorOptions options) : hyper(h) {
    lora_A = register_module("lora_A", LoraWeight(h.r, in, options));
    lora_B = register_module("lora_B", LoraWeight(out, h.r, options));
    reset_parameters();
}

void LoraLinearImpl::reset_parameters() {
    at::NoGradGuard no_grad;
    torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
    lora_B->weight.zero_();
}

at::Tensor LoraLinearImpl::apply(const at::Tensor& x, const at::Tensor& base_out) {
    const c10::ScalarType act = x.scalar_type();
    if (autocast && act != lora_A->weight.scalar_type() && (act == at::kBFloat16 || act == at::kHalf)) {
        at::Tensor xin = x;
        if (hyper.dropout > 0.0 && lora_A->is_training()) xin = at::dropout(xin, hyper.dropout, /*train=*/true);
        at::Tensor delta = at::linear(at::linear(xin, lora_A->weight.to(act)), lora_B->weight.to(act));  // (..., out)
        return base_out + delta * hyper.scaling();
    }
    at::Tensor xin = x.to(lora_A->weight.scalar_type());  // PEFT _cast_input_dtype
    if (hyper.dropout > 0.0 && lora_A->is_training()) xin = at::dropout(xin, hyper.dropout, /*train=*/true);
    at::Tensor delta = at::linear(at::linear(xin, lora_A->weight), lora_B->weight);  // (..., out)
    return (base_out + delta * hyper.scaling()).to(base_out.scalar_type());
}

}  // namespace pdsd::lora
