// Row-wise int8 storage of frozen base weights, the 8-bit QLoRA of LLaMA-Factory
// (`quantization_bit: 8`, bitsandbytes `Linear8bitLt` with `Int8Params`, LLM.int8's weight half).
//
// A weight (N, K) is first rounded to fp16 (Int8Params._quantize does so whatever the load
// dtype), then each output row r keeps its absmax SCB[r] (fp32, the fp16 value widened) and
// every value becomes CB[r, k] = round_half_even(w16[r, k] * (1/SCB[r] * 127)) as int8 (the
// reciprocal-times-127 order is Python's `127.0 / t`, which torch evaluates as
// t.reciprocal() * 127; bitsandbytes 0.50.2's int8_vectorwise_quant, threshold 0). An
// all-zero row has SCB 0 and CB 0. 1 byte a weight + 4 bytes a row.
//
// Dequantization is the weight bitsandbytes itself multiplies by when it trains through the
// layer on CPU (autograd MatMul8bitFp, and the input gradient of MatMul8bitLt everywhere):
// W' = (CB in the compute dtype) * (SCB * (1/127)), the products formed in fp32 and rounded once
// to the compute dtype. bitsandbytes' LLM.int8 forward on CUDA also quantizes the activations
// row-wise and keeps outlier columns (|x| >= llm_int8_threshold 6.0) in fp16; pdsd does not
// (docs/training.md). ATen ops: CPU and CUDA alike. Every step matches bitsandbytes bit for bit
// (tests/model/test_int8_rows.cpp against a golden made with it).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

namespace pdsd::model::int8_rows {

struct Int8Weight {
    at::Tensor cb;   // (N, K) int8: bitsandbytes' CB
    at::Tensor scb;  // (N) fp32: bitsandbytes' SCB, the absmax of each fp16 row
    int64_t nbytes() const { return cb.numel() + scb.numel() * 4; }
};
using Int8WeightPtr = std::shared_ptr<const Int8Weight>;

// w (N, K) fp32/bf16/fp16, any device -> CB, SCB on that device.
Int8Weight quantize(const at::Tensor& w);
// (N, K) in `dtype`: CB * (SCB / 127) computed in fp32, rounded once to dtype.
at::Tensor dequantize(const Int8Weight& w, c10::ScalarType dtype);

}  // namespace pdsd::model::int8_rows
