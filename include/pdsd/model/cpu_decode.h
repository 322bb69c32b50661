// CPU kernels for Qwen2 decode steps in bf16 (AVX512_BF16): matrix-vector products with a
// layer's epilogues fused in, and the small per-token ops between them.
//
// Why: a batch-1 decode step reads every weight once (~1 GB for Qwen2.5-0.5B in bf16) and
// does almost no arithmetic with it, so its speed is the rate at which weights stream from
// memory, plus whatever runs on one thread between the matrix products. oneDNN's packed bf16
// matmul (model/onednn.h) streamed ~12 GB/s on the reference VM for M = 1; these kernels read
// HF's row-major (out, in) weights as they are, four rows at a time with VDPBF16PS and a
// software prefetch of the next rows into L2 (the hardware prefetcher stops at 4 KiB page
// boundaries), in one parallel region per fused call. Between them, RMSNorm, the rotary
// embedding and single-query attention are plain loops over the raw data: as ATen ops
// (dispatch, TensorIterator, allocation; ~25 ATen calls per layer) they cost about as much
// as the weight streaming of the small projections.
//
// Numerics: bf16 values are widened to fp32, products summed in fp32 (as oneDNN's bf16
// kernels do; only the order of the sums differs), and results rounded to bf16 exactly where
// the unfused bf16 ATen ops of HF's modeling_qwen2.py round:
//   linear      y = bf16(x W^T + b)                      (bias added in fp32, as oneDNN does)
//   silu_mul    y = bf16(bf16(silu(bf16(x Wg^T))) * bf16(x Wu^T))   (at::silu, then mul)
//   linear_add  y = bf16(bf16(x W^T) + r)                (linear, then the residual add)
//   rms_norm    y = bf16(w * bf16(x * rsqrt(mean(x^2) + eps)))       (fp32 inside, as HF)
//   rotary      y = bf16(bf16(x * cos) + bf16(rotate_half(x) * sin))
//   attention   softmax(q K^T / sqrt(hd)) V in fp32 over the cached keys, rounded once
//               (SDPA's CPU flash kernel rounds the probabilities to bf16 first).
//
// Shapes: x (..., K) bf16 with at most kMaxRows rows (the decode batch); weights (N, K) bf16
// contiguous; outputs (..., N) bf16. Callers check applies() and fall back to ATen otherwise
// (other CPUs or dtypes, autograd, more rows).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace pdsd::model::cpu_decode {

constexpr int64_t kMaxRows = 8;  // above this the matmul stops being memory-bound; oneDNN/AMX wins

// True when this CPU runs AVX512F/BW + AVX512_BF16 (checked once) and PDSD_CPU_DECODE != 0.
bool cpu_supported();
// cpu_supported() and x/weights are CPU bf16, the weight contiguous, x (..., K) of at most
// kMaxRows rows, and no autograd is needed. Without a weight: the checks on x alone.
bool applies(const at::Tensor& x, const at::Tensor& weight = {});

// One call for several projections of the same input (q, k, v): outs[i] = x W_i^T + b_i, each
// (..., N_i). biases[i] may be undefined.
std::vector<at::Tensor> linear(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                               const std::vector<at::Tensor>& biases);
// silu(x Wg^T) * (x Wu^T): Qwen2's MLP up to down_proj, (..., K) -> (..., I).
at::Tensor silu_mul(const at::Tensor& x, const at::Tensor& w_gate, const at::Tensor& w_up);
// residual + x W^T (no bias), (..., K) -> (..., N); residual has the output's shape.
at::Tensor linear_add(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& residual);

// RMSNorm of x (..., H) with a bf16 weight (H), for x where applies(x) holds.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// Rotary embedding, in place, of x (R, n_heads * hd) where row r is at the position whose
// cos/sin (R, hd) rows are given (rotate-half convention: pairs i, i + hd/2).
void rotary_(at::Tensor& x, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin);
// Single-query attention for a decode step without padding: q (B, n_heads * hd) against the
// first L positions of k/v caches (B, n_kv, max_len, hd), query head h reading kv head
// h / (n_heads / n_kv). Returns (B, n_heads * hd).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t L,
                     int64_t n_heads);

}  // namespace pdsd::model::cpu_decode
