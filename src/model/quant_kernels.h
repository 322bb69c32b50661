// Inner loops of model/quant.h, one set per instruction set (quant_avx2.cpp, quant_avx512.cpp
// are compiled with their ISA's flags and only called after a runtime CPU check).
//
// These translation units include nothing but <immintrin.h> and <cstdint>: an inline function
// or template from a shared header compiled there with -mavx2 could be picked by the linker
// for the whole program (one definition rule) and run on a CPU without AVX2.
//
// Contract of every dot_* function: out[m * ldo + r] = sum over k < kp of x[m * ldx + k] *
// W'[r, k] for rows r < n and m < M, in fp32. x rows are fp32, padded with zeros to kp (a
// multiple of 32). W' as in quant.h: int8 q (n, kp) with fp16 scales (n, kp / 32); int4 q
// (n, kp / 2) with fp16 scales and minimums (n, kp / 32); int4 also takes xsum (M, kp / 32), row
// m's sums of x over each group (for the minimum's term). fp16 values are raw bits.
#pragma once

#include <cstdint>

namespace pdsd::model::quant::kernels {

void dot_q8_avx2(const float* x, int64_t ldx, int64_t M, const int8_t* q, const uint16_t* scale, int64_t n, int64_t kp,
                 float* out, int64_t ldo);
void dot_q4_avx2(const float* x, int64_t ldx, int64_t M, const uint8_t* q, const uint16_t* scale, const uint16_t* min,
                 const float* xsum, int64_t n, int64_t kp, float* out, int64_t ldo);
void dot_q8_avx512(const float* x, int64_t ldx, int64_t M, const int8_t* q, const uint16_t* scale, int64_t n, int64_t kp,
                   float* out, int64_t ldo);
void dot_q4_avx512(const float* x, int64_t ldx, int64_t M, const uint8_t* q, const uint16_t* scale, const uint16_t* min,
                   const float* xsum, int64_t n, int64_t kp, float* out, int64_t ldo);

}  // namespace pdsd::model::quant::kernels
