// AVX2 + FMA + F16C inner loops of model/quant.h; see quant_kernels.h for the contract.
// Compiled with -mavx2 -mfma -mf16c (src/CMakeLists.txt); everything but the entry points has
// internal linkage.
//
// Per group of 32 weights and row: the int8 (or unpacked int4) values are widened to fp32
// eight at a time and multiplied into a per-group partial sum with x, which is then scaled:
// acc += d * sum(x q), and for int4 acc += m * sum(x) (sum(x) per group given by the caller).
// Blocks of 4 weight rows for one x row (decode), 2 x 2 otherwise; the rows after the block
// are prefetched into L2 as it streams (the hardware prefetcher stops at 4 KiB pages).
#include "quant_kernels.h"

#include <immintrin.h>

namespace pdsd::model::quant::kernels {
namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline __m256 widen8(const int8_t* p) {  // 8 int8 -> 8 fp32
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 widen8u(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }  // low 8 bytes

template <int NR, int MR>
void q8_block(const float* x, int64_t ldx, const int8_t* q, const uint16_t* sc, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32;
    __m256 acc[MR][NR];
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
    }
    const int8_t* next = q + NR * kp;
    for (int64_t g = 0; g < G; ++g) {
        __m256 p[MR][NR];
        for (int r = 0; r < NR; ++r) _mm_prefetch(reinterpret_cast<const char*>(next + r * kp + g * 32), _MM_HINT_T1);
        for (int i = 0; i < 4; ++i) {
            __m256 w[NR];
            for (int r = 0; r < NR; ++r) w[r] = widen8(q + r * kp + g * 32 + 8 * i);
            for (int m = 0; m < MR; ++m) {
                const __m256 xv = _mm256_loadu_ps(x + m * ldx + g * 32 + 8 * i);
                for (int r = 0; r < NR; ++r) p[m][r] = i == 0 ? _mm256_mul_ps(xv, w[r]) : _mm256_fmadd_ps(xv, w[r], p[m][r]);
            }
        }
        for (int r = 0; r < NR; ++r) {
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(sc[r * G + g]));
            for (int m = 0; m < MR; ++m) acc[m][r] = _mm256_fmadd_ps(p[m][r], d, acc[m][r]);
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) out[m * ldo + r] = hsum(acc[m][r]);
    }
}

template <int NR, int MR>
void q4_block(const float* x, int64_t ldx, const float* xs, int64_t ldxs, const uint8_t* q, const uint16_t* sc,
              const uint16_t* mn, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32, row = kp / 2;
    const __m128i low = _mm_set1_epi8(0x0F);
    __m256 acc[MR][NR];
    float macc[MR][NR];
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps(), macc[m][r] = 0.0f;
    }
    const uint8_t* next = q + NR * row;
    for (int64_t g = 0; g < G; ++g) {
        __m256 p[MR][NR];
        for (int r = 0; r < NR; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(next + r * row + g * 16), _MM_HINT_T1);
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + r * row + g * 16));
            const __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
            const __m256 w0 = widen8u(lo), w1 = widen8u(_mm_srli_si128(lo, 8));
            const __m256 w2 = widen8u(hi), w3 = widen8u(_mm_srli_si128(hi, 8));
            for (int m = 0; m < MR; ++m) {
                const float* xg = x + m * ldx + g * 32;
                __m256 s = _mm256_mul_ps(_mm256_loadu_ps(xg), w0);
                s = _mm256_fmadd_ps(_mm256_loadu_ps(xg + 8), w1, s);
                s = _mm256_fmadd_ps(_mm256_loadu_ps(xg + 16), w2, s);
                p[m][r] = _mm256_fmadd_ps(_mm256_loadu_ps(xg + 24), w3, s);
            }
        }
        for (int r = 0; r < NR; ++r) {
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(sc[r * G + g]));
            const float mr = _cvtsh_ss(mn[r * G + g]);
            for (int m = 0; m < MR; ++m) {
                acc[m][r] = _mm256_fmadd_ps(p[m][r], d, acc[m][r]);
                macc[m][r] += mr * xs[m * ldxs + g];
            }
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int r = 0; r < NR; ++r) out[m * ldo + r] = hsum(acc[m][r]) + macc[m][r];
    }
}

}  // namespace

void dot_q8_avx2(const float* x, int64_t ldx, int64_t M, const int8_t* q, const uint16_t* scale, int64_t n, int64_t kp,
                 float* out, int64_t ldo) {
    const int64_t G = kp / 32;
    int64_t r = 0;
    if (M == 1) {
        for (; r + 4 <= n; r += 4) q8_block<4, 1>(x, ldx, q + r * kp, scale + r * G, kp, out + r, ldo);
    }
    for (; r + 2 <= n; r += 2) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) q8_block<2, 2>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
        if (m < M) q8_block<2, 1>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
    }
    for (; r < n; ++r) {
        for (int64_t m = 0; m < M; ++m) q8_block<1, 1>(x + m * ldx, ldx, q + r * kp, scale + r * G, kp, out + m * ldo + r, ldo);
    }
}

void dot_q4_avx2(const float* x, int64_t ldx, int64_t M, const uint8_t* q, const uint16_t* scale, const uint16_t* min,
                 const float* xsum, int64_t n, int64_t kp, float* out, int64_t ldo) {
    const int64_t G = kp / 32, row = kp / 2;
    int64_t r = 0;
    if (M == 1) {
        for (; r + 4 <= n; r += 4) q4_block<4, 1>(x, ldx, xsum, G, q + r * row, scale + r * G, min + r * G, kp, out + r, ldo);
    }
    for (; r + 2 <= n; r += 2) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            q4_block<2, 2>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
        }
        if (m < M) q4_block<2, 1>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
    }
    for (; r < n; ++r) {
        for (int64_t m = 0; m < M; ++m) {
            q4_block<1, 1>(x + m * ldx, ldx, xsum + m * G, G, q + r * row, scale + r * G, min + r * G, kp, out + m * ldo + r, ldo);
        }
    }
}

}  // namespace pdsd::model::quant::kernels
