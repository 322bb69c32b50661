// Activation (gradient) checkpointing for training: LLaMA-Factory's `gradient_checkpointing`.
//
// checkpoint(fn, x, params) returns fn(x) but keeps none of fn's intermediate activations:
// the forward runs without autograd recording, only x (and references to params) are saved,
// and backward re-runs fn(x) with autograd on and back-propagates through that recompute.
// Memory per decoder layer drops from every saved intermediate (~(14 H + 4 I) values per token)
// to the layer input (H values per token), for one extra forward of each layer.
//
// `params` are the trainable tensors fn uses (a layer's LoRA matrices). They are inputs of the
// autograd node, so the output requires grad even when x does not (the first layer's input
// comes from the frozen embeddings; PyTorch's reentrant checkpoint needs
// enable_input_require_grads for that), and their gradients are returned by backward and
// accumulated by autograd as usual.
//
// With preserve_rng, the default generator of x's device is captured before the forward and
// restored around the recompute (then put back), so dropout draws the same mask twice: the
// gradients equal those of the plain forward, dropout or not.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace pdsd::train {

using LayerFn = std::function<at::Tensor(const at::Tensor&)>;

// fn(x) with activations recomputed in backward. fn must be a pure function of x, params and
// (with preserve_rng) the generator state; it is copied into the autograd graph.
at::Tensor checkpoint(const LayerFn& fn, const at::Tensor& x, const std::vector<at::Tensor>& params, bool preserve_rng);

// A model::ForwardOptions::layer_wrapper that checkpoints every decoder layer; layer_params[i]
// are layer i's trainable tensors (may be empty). Only active while grad mode is on: under
// NoGradGuard (eval) the layer runs plainly.
std::function<at::Tensor(int64_t, const LayerFn&, const at::Tensor&)> checkpoint_every_layer(
    std::vector<std::vector<at::Tensor>> layer_params, bool preserve_rng);

}  // namespace pdsd::train
