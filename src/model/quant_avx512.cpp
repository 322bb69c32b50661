// AVX-512F/BW inner loops of model/quant.h; see quant_kernels.h for the contract and
// quant_avx2.cpp for the scheme (the same loops on 16 lanes: two steps per group of 32).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mf16c -mfma; internal linkage except the
// entry points.
#include "quant_kernels.h"

#include <immintrin.h>

// GCC 12 warns about the deliberately undefined upper lanes inside _mm512_reduce_add_ps once it
// is inlined; the lanes are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pdsd::model::quant::kernels {
namespace {

inline __m512 widen16(const int8_t* p) {  // 16 int8 -> 16 fp32
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 widen16u(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

template <int NR, int MR>
void q8_block(const float* x, int64_t ldx, const int8_t* q, const uint16_t* sc, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32;
    __m512 acc[MR][NR];
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
    }
    const int8_t* next = q + NR * kp;
    for (int64_t g = 0; g < G; ++g) {
        __m512 w[NR][2];
        for (int r = 0; r < NR; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(next + r * kp + g * 32), _MM_HINT_T1);
            w[r][0] = widen16(q + r * kp + g * 32);
            w[r][1] = widen16(q + r * kp + g * 32 + 16);
        }
        for (int m = 0; m < MR; ++m) {
            const __m512 x0 = _mm512_loadu_ps(x + m * ldx + g * 32), x1 = _mm512_loadu_ps(x + m * ldx + g * 32 + 16);
            for (int r = 0; r < NR; ++r) {
                const __m512 p = _mm512_fmadd_ps(x1, w[r][1], _mm512_mul_ps(x0, w[r][0]));
                acc[m][r] = _mm512_fmadd_ps(p, _mm512_set1_ps(_cvtsh_ss(sc[r * G + g])), acc[m][r]);
            }
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) out[m * ldo + r] = _mm512_reduce_add_ps(acc[m][r]);
    }
}

template <int NR, int MR>
void q4_block(const float* x, int64_t ldx, const float* xs, int64_t ldxs, const uint8_t* q, const uint16_t* sc,
              const uint16_t* mn, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32, row = kp / 2;
    const __m128i low = _mm_set1_epi8(0x0F);
    __m512 acc[MR][NR];
    float macc[MR][NR];
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps(), macc[m][r] = 0.0f;
    }
    const uint8_t* next = q + NR * row;
    for (int64_t g = 0; g < G; ++g) {
        for (int r = 0; r < NR; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(next + r * row + g * 16), _MM_HINT_T1);
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + r * row + g * 16));
            const __m512 w0 = widen16u(_mm_and_si128(b, low)), w1 = widen16u(_mm_and_si128(_mm_srli_epi16(b, 4), low));
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(sc[r * G + g]));
            const float mr = _cvtsh_ss(mn[r * G + g]);
            for (int m = 0; m < MR; ++m) {
                const float* xg = x + m * ldx + g * 32;
                const __m512 p = _mm512_fmadd_ps(_mm512_loadu_ps(xg + 16), w1, _mm512_mul_ps(_mm512_loadu_ps(xg), w0));
                acc[m][r] = _mm512_fmadd_ps(p, d, acc[m][r]);
                macc[m][r] += mr * xs[m * ldxs + g];
            }
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) out[m * ldo + r] = _mm512_reduce_add_ps(acc[m][r]) + macc[m][r];
    }
}

}  // namespace

void dot_q8_avx512(const float* x, int64_t ldx, int64_t M, const int8_t* q, const uint16_t* scale, int64_t n, int64_t kp,
                   float* out, int64_t ldo) {
    const int64_t G = kp / 32;
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) q8_block<4, 2>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
        if (m < M) q8_block<4, 1>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
    }
    for (; r < n; ++r) {
        for (int64_t m = 0; m < M; ++m) q8_block<1, 1>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
    }
}

void dot_q4_avx512(const float* x, int64_t ldx, int64_t M, const uint8_t* q, const uint16_t* scale, const uint16_t* min,
                   const float* xsum, int64_t n, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32, row = kp / 2;
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            q4_block<4, 2>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
        }
        if (m < M) q4_block<4, 1>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
    }
    for (; r < n; ++r) {
        for (int64_t m = 0; m < M; ++m) {
            q4_block<1, 1>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
        }
    }
}

}  // namespace pdsd::model::quant::kernels
