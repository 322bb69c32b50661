// Trainable LoRA on a Linear layer, with PEFT's math, initialisation and parameter names.
//
// PEFT lora.Linear.forward: result = base(x); result += lora_B(lora_A(dropout(x))) * scaling,
// with x cast to the LoRA weights' dtype and the sum cast back to the base output's dtype.
// lora_A.weight (r, in) starts Kaiming-uniform with a = sqrt(5) (nn.Linear's default:
// U(-1/sqrt(in), 1/sqrt(in))), lora_B.weight (out, r) starts at zero, so a fresh adapter
// changes nothing. scaling = alpha / r, or alpha / sqrt(r) with use_rslora.
//
// The two matrices are registered as submodules "lora_A" and "lora_B" (each holding
// "weight") of the adapted projection, so named_parameters() yields
// "model.layers.N.self_attn.q_proj.lora_A.weight"; PEFT saves the same name behind
// "base_model.model." (lora/adapter.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace pdsd::lora {

// A bare "weight" parameter (PEFT's lora_A / lora_B are bias-free nn.Linear).
class LoraWeightImpl : public torch::nn::Module {
public:
    LoraWeightImpl(int64_t out, int64_t in, at::TensorOptions options);
    at::Tensor weight;  // (out, in)
};
TORCH_MODULE(LoraWeight);

struct LoraHyper {
    int64_t r = 8;
    double alpha = 16;
    double dropout = 0.0;
    bool use_rslora = false;
    double scaling() const;  // alpha / r or alpha / sqrt(r)
};

class LoraLinearImpl : public torch::nn::Module {
public:
    // `options`: dtype/device of the trainable weights (fp32 like LLaMA-Factory's upcast).
    LoraLinearImpl(int64_t in, int64_t out, const LoraHyper& hyper, at::TensorOptions options);

    // PEFT's init: A Kaiming-uniform(a = sqrt(5)) from the global generator, B = 0.
    void reset_parameters();

    // The adapted output (dropout only while lora_A is in training mode: the layer itself is
    // not in the model's module tree, its lora_A / lora_B children are).
    // The adapted output: (base_out + scaling * B(A(dropout(x)))) in base_out's dtype.
    // x (..., in), base_out (..., out).
    at::Tensor apply(const at::Tensor& x, const at::Tensor& base_out);

    LoraWeight lora_A{nullptr};  // weight (r, in)
    LoraWeight lora_B{nullptr};  // weight (out, r)
    LoraHyper hyper;
    // Mixed-precision training as under torch.autocast (LLaMA-Factory's bf16 on CUDA): with
    // half-precision activations the two matmuls run in that dtype on casts of the fp32
    // weights (gradients reach the fp32 weights through the casts). Off: PEFT's eager rule,
    // x cast to the weights' dtype.
    bool autocast = false;
};
TORCH_MODULE(LoraLinear);

}  // namespace pdsd::lora
