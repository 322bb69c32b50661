// 4-bit NormalFloat (NF4) and FP4 block quantization of frozen base weights, the storage of
// QLoRA (LLaMA-Factory `quantization_bit: 4`, bitsandbytes `Linear4bit`).
//
// A weight (N, K) is read row-major as one vector and cut into blocks of `blocksize` values
// (64, bitsandbytes' default; the last block may be short). Each block keeps its absmax (fp32);
// each value becomes the index of the nearest of 16 code values after division by the absmax
// (NF4: the quantiles of a normal distribution, exact zero included; FP4: a sign + 3-bit float).
// Two indices share a byte, the first in the high nibble. With double quantization
// (`double_quantization: true`, bitsandbytes `compress_statistics`) the absmaxes themselves are
// stored as 8-bit indices into bitsandbytes' signed dynamic map, in blocks of 256, after their
// mean (the offset) is subtracted: 0.5 + 8/64 + 32/(64*256) bits per weight instead of 0.5 +
// 32/64. Every step matches bitsandbytes 0.50.2 bit for bit (tests/model/test_nf4.cpp against a
// golden made with it).
//
// Dequantization builds the weight in the compute dtype on the weight's device (ATen ops: CPU
// and CUDA alike) for one matmul; QLoRA's gradients flow to the activations and the LoRA
// matrices only.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace pdsd::model::nf4 {

enum class Kind { nf4, fp4 };
Kind parse_kind(const std::string& name);  // "nf4" | "fp4", else ConfigError naming quantization_type
const char* kind_name(Kind k);

struct Nf4Weight {
    Kind kind = Kind::nf4;
    int64_t rows = 0, cols = 0;  // the original (N, K)
    int64_t blocksize = 64;
    at::Tensor packed;           // (ceil(N*K / 2)) uint8, two 4-bit indices a byte, high nibble first
    at::Tensor absmax;           // (blocks) fp32; undefined with double quantization
    // Double quantization: absmax[b] = dynamic_map[qabsmax[b]] * absmax2[b / 256] + offset.
    at::Tensor qabsmax;          // (blocks) uint8
    at::Tensor absmax2;          // (ceil(blocks / 256)) fp32
    float offset = 0;
    bool double_quant() const { return qabsmax.defined(); }
    int64_t nbytes() const;      // bytes of packed + the block statistics
};
using Nf4WeightPtr = std::shared_ptr<const Nf4Weight>;

// The 16 code values (fp32, CPU) in index order (FP4's are not sorted).
at::Tensor code(Kind k);
// bitsandbytes' signed 8-bit dynamic map (256 fp32 values, ascending, CPU).
at::Tensor dynamic_map();

// w (N, K) fp32/bf16/fp16, any device -> 4-bit blocks on that device.
Nf4Weight quantize(const at::Tensor& w, Kind kind, bool double_quant, int64_t blocksize = 64);
// (N, K) in `dtype`: code[index] * absmax computed in fp32, rounded once to dtype.
at::Tensor dequantize(const Nf4Weight& w, c10::ScalarType dtype);
// The per-block absmax (fp32), from the double-quantized form when that is what is stored.
at::Tensor block_absmax(const Nf4Weight& w);

}  // namespace pdsd::model::nf4
