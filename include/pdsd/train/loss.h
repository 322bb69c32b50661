// Causal-LM cross-entropy without the B x T x V logits.
//
// HF (ForCausalLMLoss): logits = lm_head(hidden) for every position, upcast to fp32,
// shifted (logits[:, :-1] predict labels[:, 1:]), CE summed over labels != -100 and divided
// by num_items_in_batch. For Qwen2.5 at B=4, T=4096 those logits alone are 9.3 GiB in fp32.
//
// pdsd computes the same sum from the final hidden states:
//  1. keep only the positions whose shifted label is a target (prompt tokens never need
//     logits: for SFT that is most of the sequence);
//  2. for chunks of `chunk_tokens` of those positions: logits = h W^T (in h's dtype, like
//     HF's lm_head), upcast to fp32, loss += logsumexp - logit[target], and the gradient
//     d loss / d h = (softmax - onehot) W is computed right there and kept (N x H);
//  3. backward multiplies that stored gradient by the incoming scalar gradient.
// Peak extra memory is one chunk of logits (chunk_tokens x V fp32, ~3 temporaries) plus
// N x H for the gradient, instead of B x T x V (+ its fp32 copy and softmax) for autograd.
// When the LM-head weight requires grad (finetuning_type full, or freeze with lm_head /
// tied embed_tokens trained), d loss / d W = sum over chunks (softmax - onehot)^T h is
// accumulated too (V x H fp32, one more weight-sized buffer) and returned by backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pdsd::train {

constexpr int64_t kIgnoreIndex = -100;

struct LossSum {
    at::Tensor sum;        // 0-dim fp32: sum of token cross-entropies (differentiable w.r.t. hidden)
    int64_t n_tokens = 0;  // number of target tokens (labels[:, 1:] != -100)
};

// hidden (B, T, H) final hidden states (after model.norm); lm_weight (V, H); labels (B, T)
// int64 with -100 = ignored, on any device (on the host, nothing waits for the GPU).
// Positions t predict labels[:, t + 1].
LossSum causal_lm_loss_sum(const at::Tensor& hidden, const at::Tensor& lm_weight, const at::Tensor& labels,
                           int64_t chunk_tokens = 1024);

// Number of target tokens in labels (B, T): (labels[:, 1:] != -100).sum().
int64_t count_target_tokens(const at::Tensor& labels);

// Reference: full logits (B, T, V) -> HF's mean CE over shifted targets (tests only; O(BTV)).
at::Tensor reference_causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace pdsd::train
