// Weight-only quantized CPU inference: `--quant int8 | int4` (chat, serve, model bench;
// `quant:` in model_settings.yaml).
//
// Why: a batch-1 decode step reads every weight once and does almost no arithmetic with it,
// so its speed is the rate weights stream from memory; fewer bytes per weight is the lever
// (Qwen2.5-0.5B: 988 MB in bf16, ~525 MB in int8, ~330 MB in int4 with an int8 lm_head).
//
// Formats (HF's row-major (N, K) weights, quantized at load; rows padded with zeros to Kp =
// K rounded up to a multiple of 32, so any K works):
//   int8  groups of 32 along K, one fp16 scale d per group (llama.cpp's Q8_0):
//         d = fp16(max|w| / 127), q = clamp(round(w / d), -127, 127), w' = d q.
//   int4  groups of 32, fp16 scale d and fp16 minimum m per group (Q4_1-like):
//         q = clamp(round((w - m) / d), 0, 15), w' = d q + m, with (d, m) refitted by least
//         squares to the chosen q (two rounds). Byte j of a group holds element j in its low
//         nibble and element j + 16 in its high nibble.
//         In int4 mode v_proj and the tied embedding / lm_head stay int8 (as llama.cpp's
//         Q4_K_M keeps attn_v and output at 6-8 bits): they are small or quality-critical.
// Kernels: y = x W'^T with x rows widened to fp32 and W' = d q (+ m) formed in registers, fp32
// sums (activations are not quantized: on AVX2 the int8 x int8 path saved no time once the
// step is memory-bound, and fp32 activations keep the kernel exact up to summation order
// against "dequantize, then fp32 matmul"). AVX2+FMA+F16C and AVX-512F/BW variants behind a
// runtime check, a scalar loop elsewhere. At most kMaxRows rows (decode) stream the weights;
// up to 64 rows (a chat prompt's prefill) stream them once per block of kMaxRows rows; more
// rows dequantize chunks of rows to fp32 and use ATen's matmul (quant.cpp, kStreamedRows).
// Weights quantized at load are cached on disk and mapped on the next load (quant_cache.h).
#pragma once

#include "pdsd/model/quant_type.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::model {
struct LoadedModel;  // loader.h
}

namespace pdsd::model::quant {

constexpr int64_t kGroup = 32;    // weights per scale
constexpr int64_t kMaxRows = 8;   // rows of x up to which the weights are streamed

// One quantized (N, K) weight. All tensors CPU, contiguous.
struct QuantWeight {
    Type type = Type::none;
    int64_t n = 0, k = 0, kp = 0;  // rows, columns, columns padded to a multiple of kGroup
    at::Tensor q;                  // int8: (n, kp) kChar; int4: (n, kp / 2) kByte, two weights a byte
    at::Tensor scale;              // (n, kp / kGroup) kHalf
    at::Tensor min;                // int4: (n, kp / kGroup) kHalf; int8: undefined
    int64_t nbytes() const;        // bytes of q, scale and min
};
using QuantWeightPtr = std::shared_ptr<const QuantWeight>;

// w (N, K) fp32/bf16/fp16 CPU -> quantized (threads over rows). type int8 or int4.
QuantWeight quantize(const at::Tensor& w, Type type);
// (N, K) fp32: every weight as the kernels see it.
at::Tensor dequantize(const QuantWeight& w);
// Rows `ids` (any shape, int64) of w dequantized: (..., K) in `dtype` (embedding lookup).
at::Tensor dequantize_rows(const QuantWeight& w, const at::Tensor& ids, c10::ScalarType dtype);

// Kernel set: "avx512" (AVX-512F/BW), "avx2" (AVX2+FMA+F16C) or "scalar". The best this CPU
// runs unless PDSD_QUANT_ISA names another one it runs.
std::string isa();
std::vector<std::string> available_isas();  // best first, "scalar" always last
// Tests and A/B timing: use `name` from now on (must be in available_isas(); else false).
bool force_isa(const std::string& name);

// Kernels. x (..., K) CPU fp32 or bf16 (any rows: more than kMaxRows go through ATen); the
// outputs have x's dtype and shape (..., N). Sums in fp32; each result rounded once to x's
// dtype after its epilogue.
// Several projections of the same x (q, k, v): outs[i] = x W_i'^T + b_i (biases may be undefined).
std::vector<at::Tensor> linear(const at::Tensor& x, const std::vector<const QuantWeight*>& weights,
                               const std::vector<at::Tensor>& biases);
// silu(x Wg'^T) * (x Wu'^T), (..., K) -> (..., I).
at::Tensor silu_mul(const at::Tensor& x, const QuantWeight& gate, const QuantWeight& up);
// residual + x W'^T, residual of the output's shape.
at::Tensor linear_add(const at::Tensor& x, const QuantWeight& w, const at::Tensor& residual);

// Quantizes every projection and the embedding / lm_head of a loaded CPU model in place:
// Proj::quant and TokenEmbedding::quant are set (model/qwen2.h), the float weights are
// released (their parameters keep their shapes as zero-stride views of one zero, so the module
// tree and LoRA adapters still see the shapes; nothing may read them: the quantized path
// takes every call). Returns the quantized bytes. UsageError on a non-CPU model.
int64_t quantize_model(LoadedModel& lm, Type type);

// Drops a float weight whose quantized copy took its place: the parameter keeps its shape as a
// zero-stride view of one zero (shapes still read right; the values are gone).
// `dtype` (default: p's own) is the placeholder's dtype: a weight read from the file in its
// stored dtype gives its place to one of the model's compute dtype.
void release_float_weight(at::Tensor& p, std::optional<c10::ScalarType> dtype = std::nullopt);

// Whether quantize_model replaces the HF parameter `name` (the seven decoder projections'
// weights, model.embed_tokens.weight, lm_head.weight): the loader reads these straight from
// the mapped file in their stored dtype when it quantizes at load (LoadOptions::quant).
bool is_quantized_weight(const std::string& name);

}  // namespace pdsd::model::quant
