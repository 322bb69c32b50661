// CUDA-graph replay of one decode step (model/qwen2.h decode_fixed).
//
// A batch-1 decode step of Qwen2.5-0.5B is ~400 small kernels; launched one by one from the
// host they take several milliseconds, while the GPU needs well under one. Captured once into a
// CUDA graph they are replayed with a single launch. The graph reads its inputs from static
// device tensors (token ids, position ids, cache slot) and writes the logits into a tensor it
// owns, so each step is: copy three small inputs, replay, read the logits.
//
// A graph is tied to one KV cache (its tensors' addresses, batch and max_len): a reallocated
// cache needs a new DecodeGraph. Built without CUDA support in libtorch, supported() is false and only
// eager steps (capture = false) are available.
#pragma once

#include "pdsd/model/qwen2.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

namespace pdsd::model {

class DecodeGraph {
public:
    // True when libtorch was built with CUDA and `device` is a CUDA device.
    static bool supported(const c10::Device& device);

    // capture false: run decode_fixed eagerly on every step (any device; tests use it on CPU).
    // capture true needs supported(model->options().device()).
    DecodeGraph(Qwen2ForCausalLM model, KVCache& cache, bool capture = true);
    ~DecodeGraph();
    DecodeGraph(const DecodeGraph&) = delete;
    DecodeGraph& operator=(const DecodeGraph&) = delete;

    bool matches(const KVCache& cache) const;  // captured for this very cache?

    // ids, position_ids (B, 1) int64 (any device); slot = cache position to fill (the cache's
    // length before the step). The first call warms up and captures, later calls replay.
    // Returns logits (B, V) in the model dtype on the model's device, valid until the next step.
    at::Tensor step(const at::Tensor& ids, const at::Tensor& position_ids, int64_t slot);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pdsd::model
