// Compact IVF scan, fp16 or int8 codes (see ivf_compact.h). The kernels are compiled for AVX-512F with
// GCC's target attribute and only called after a runtime CPU check, so the library
// still runs on CPUs without AVX-512 (search then stays on FAISS's path).
#include "ivf_compact.h"

#include "pdsd/core/error.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace pdsd::kb::detail {

namespace {

#define PDSD_AVX512 __attribute__((target("avx512f")))
#define PDSD_AVX512BW __attribute__((target("avx512f,avx512bw")))

// Horizontal sum. (Not _mm512_reduce_add_ps nor the unmasked fp16 conversions: GCC 12's
// versions start from "undefined" registers and -Wuninitialized flags them.)
PDSD_AVX512 float hsum(__m512 v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    float s = 0;
    for (float x : t) s += x;
    return s;
}

// fp32 dot product, d % 16 == 0.
PDSD_AVX512 float dot_f32(const float* a, const float* b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < d; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    return hsum(_mm512_add_ps(s0, s1));
}

// fp16 row `a` (IEEE half) . fp32 query `q`, fp32 accumulation, d % 16 == 0.
PDSD_AVX512 float dot_f16(const uint16_t* a, const float* q, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
#define PDSD_H(j) _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (j))))
    for (; i + 64 <= d; i += 64) {
        s0 = _mm512_fmadd_ps(PDSD_H(i), _mm512_loadu_ps(q + i), s0);
        s1 = _mm512_fmadd_ps(PDSD_H(i + 16), _mm512_loadu_ps(q + i + 16), s1);
        s2 = _mm512_fmadd_ps(PDSD_H(i + 32), _mm512_loadu_ps(q + i + 32), s2);
        s3 = _mm512_fmadd_ps(PDSD_H(i + 48), _mm512_loadu_ps(q + i + 48), s3);
    }
    for (; i < d; i += 16) s0 = _mm512_fmadd_ps(PDSD_H(i), _mm512_loadu_ps(q + i), s0);
    return hsum(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#undef PDSD_H
}

// fp32 -> fp16 (round to nearest even), d % 16 == 0.
PDSD_AVX512 void to_f16(const float* x, uint16_t* out, size_t d) {
    for (size_t i = 0; i < d; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                            _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// int8 row `a` . int16 query `q` (the int8-quantized query widened), int32 sum, d % 32 == 0.
PDSD_AVX512BW int32_t dot_i8(const int8_t* a, const int16_t* q, size_t d) {
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        __m512i a0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)));
        __m512i a1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 32)));
        s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(a0, _mm512_loadu_si512(q + i)));
        s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(a1, _mm512_loadu_si512(q + i + 32)));
    }
    for (; i < d; i += 32) {
        __m512i a0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)));
        s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(a0, _mm512_loadu_si512(q + i)));
    }
    alignas(64) int32_t t[16];
    _mm512_store_si512(t, _mm512_add_epi32(s0, s1));
    int32_t sum = 0;
    for (int32_t x : t) sum += x;
    return sum;
}

// Symmetric int8 quantization of one row: out_i = round(x_i / scale), scale = max|x| / 127.
float quantize_i8(const float* x, size_t d, int8_t* out) {
    float m = 0;
    for (size_t i = 0; i < d; ++i) m = std::max(m, std::fabs(x[i]));
    float scale = m > 0 ? m / 127.0f : 1.0f;
    for (size_t i = 0; i < d; ++i) out[i] = static_cast<int8_t>(std::lrintf(x[i] / scale));
    return scale;
}


}  // namespace

bool CompactIvf::supported(Codes codes, size_t dim) {
    static const bool f = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f") != 0);
    static const bool bw = __builtin_cpu_supports("avx512bw") != 0;
    if (codes == Codes::fp16) return f && dim > 0 && dim % 16 == 0;
    return f && bw && dim > 0 && dim % 32 == 0;
}

CompactIvf::CompactIvf(Codes codes, size_t dim, const float* centroids, const std::vector<List>& lists)
    : codes_(codes), dim_(dim), centroids_(centroids), lists_(lists) {
    if (!supported(codes, dim))
        throw InternalError(ErrorInfo{}.at("CompactIvf").expected("an AVX-512 CPU, dim % 16 == 0 (fp16) or % 32 == 0 (int8)")
                                .found("dim " + std::to_string(dim)));
    offset_.resize(lists_.size() + 1, 0);
    for (size_t l = 0; l < lists_.size(); ++l) offset_[l + 1] = offset_[l] + lists_[l].size;
    const size_t n = offset_.back();
    if (codes_ == Codes::fp16) half_.resize(n * dim_);
    else { int8_.resize(n * dim_); scale_.resize(n); }
    for (size_t l = 0; l < lists_.size(); ++l)
        for (size_t r = 0; r < lists_[l].size; ++r) {
            const float* x = lists_[l].codes + r * dim_;
            size_t row = offset_[l] + r;
            if (codes_ == Codes::fp16) to_f16(x, half_.data() + row * dim_, dim_);
            else scale_[row] = quantize_i8(x, dim_, int8_.data() + row * dim_);
        }
}

void CompactIvf::search(const float* q, size_t nprobe, size_t k, float* dist, int64_t* labels) const {
    const size_t nlist = lists_.size();
    for (size_t i = 0; i < k; ++i) { dist[i] = -std::numeric_limits<float>::infinity(); labels[i] = -1; }
    if (k == 0 || nlist == 0) return;
    nprobe = std::clamp<size_t>(nprobe, 1, nlist);

    // 1. Coarse: fp32 centroid scores, the best nprobe lists (as FAISS's quantizer).
    std::vector<std::pair<float, uint32_t>> cs(nlist);
    for (size_t l = 0; l < nlist; ++l) cs[l] = {dot_f32(centroids_ + l * dim_, q, dim_), static_cast<uint32_t>(l)};
    auto better = [](const std::pair<float, uint32_t>& a, const std::pair<float, uint32_t>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::nth_element(cs.begin(), cs.begin() + static_cast<ptrdiff_t>(nprobe - 1), cs.end(), better);

    // 2. Scan the probed lists in fp16 / int8, keeping the best R rows in a
    //    min-heap (front = the worst kept), as (score, global row).
    const size_t R = codes_ == Codes::fp16 ? k + 32 : 2 * k + 64;
    std::vector<int16_t> q16;
    float q_scale = 1;
    if (codes_ == Codes::int8) {
        std::vector<int8_t> q8(dim_);
        q_scale = quantize_i8(q, dim_, q8.data());
        q16.assign(q8.begin(), q8.end());
    }
    std::vector<std::pair<float, size_t>> heap;
    heap.reserve(R + 1);
    auto worse_first = [](const std::pair<float, size_t>& a, const std::pair<float, size_t>& b) { return a.first > b.first; };
    for (size_t p = 0; p < nprobe; ++p) {
        const size_t l = cs[p].second;
        for (size_t row = offset_[l]; row < offset_[l + 1]; ++row) {
            float s = codes_ == Codes::fp16
                          ? dot_f16(half_.data() + row * dim_, q, dim_)
                          : scale_[row] * q_scale * static_cast<float>(dot_i8(int8_.data() + row * dim_, q16.data(), dim_));
            if (heap.size() < R) {
                heap.push_back({s, row});
                std::push_heap(heap.begin(), heap.end(), worse_first);
            } else if (s > heap.front().first) {
                std::pop_heap(heap.begin(), heap.end(), worse_first);
                heap.back() = {s, row};
                std::push_heap(heap.begin(), heap.end(), worse_first);
            }
        }
    }

    // 3. Rescore the candidates with the fp32 vectors; best first, ties by lower id.
    std::vector<std::pair<float, int64_t>> exact;
    exact.reserve(heap.size());
    for (auto& [s, row] : heap) {
        size_t l = static_cast<size_t>(std::upper_bound(offset_.begin(), offset_.end(), row) - offset_.begin()) - 1;
        size_t r = row - offset_[l];
        exact.push_back({dot_f32(lists_[l].codes + r * dim_, q, dim_), lists_[l].ids[r]});
    }
    std::sort(exact.begin(), exact.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    for (size_t i = 0; i < k && i < exact.size(); ++i) { dist[i] = exact[i].first; labels[i] = exact[i].second; }
}

}  // namespace pdsd::kb::detail
