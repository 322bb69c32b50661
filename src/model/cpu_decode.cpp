// See cpu_decode.h. The kernels are compiled for AVX512F/BW + AVX512_BF16 with target
// attributes and only called after a runtime CPU check, so the binary still runs anywhere.
#include "pdsd/model/cpu_decode.h"

#include "pdsd/core/error.h"

#include "row_chunks.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PDSD_CPU_X86 1
// GCC 12 warns about the deliberately undefined upper lanes (_mm256_undefined_pd) inside
// _mm512_reduce_add_ps once it is inlined; the lanes are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace pdsd::model::cpu_decode {
namespace {

using bf16 = uint16_t;  // raw bits; at::BFloat16 has the same layout

inline float to_float(bf16 h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Round to nearest even, NaN to the quiet NaN: c10::BFloat16's own conversion.
inline bf16 to_bf16(float f) {
    if (std::isnan(f)) return 0x7FC0;
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return static_cast<bf16>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float round_bf16_scalar(float f) { return to_float(to_bf16(f)); }

constexpr int64_t kBlockRows = 4;  // weight rows per kernel call: 4 row streams, 4 x MR accumulators

#ifdef PDSD_CPU_X86
// out[m * NR + r] = dot(x[m, :K], w[r, :K]) for r < NR, m < MR; fp32 sums of bf16 pair
// products. `next` = the rows after this block (the next call's), prefetched into L2 while
// this block streams, so the reads run ahead across page boundaries.
template <int NR, int MR>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void dot_block(const bf16* x, int64_t ldx, const bf16* w,
                                                                     int64_t K, float* out) {
    __m512 acc[MR][NR];
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
    }
    const bf16* next = w + NR * K;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512i wv[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(next + r * K + k), _MM_HINT_T1);
            wv[r] = _mm512_loadu_si512(w + r * K + k);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], (__m512bh)wv[r], xv);
        }
    }
    if (k < K) {  // K % 32 elements left: masked loads read zeros past the row end
        const __mmask32 tail = static_cast<__mmask32>((1ull << (K - k)) - 1);
        __m512i wv[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) wv[r] = _mm512_maskz_loadu_epi16(tail, w + r * K + k);
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + m * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], (__m512bh)wv[r], xv);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) out[m * NR + r] = _mm512_reduce_add_ps(acc[m][r]);
    }
}

template <int NR>
void dot_block_rows(const bf16* x, int64_t ldx, int64_t mr, const bf16* w, int64_t K, float* out) {
    switch (mr) {
        case 1: dot_block<NR, 1>(x, ldx, w, K, out); break;
        case 2: dot_block<NR, 2>(x, ldx, w, K, out); break;
        case 3: dot_block<NR, 3>(x, ldx, w, K, out); break;
        default: dot_block<NR, 4>(x, ldx, w, K, out); break;
    }
}
#endif

// dots[m * ld + j] = x[m] . w[j] for j < nr <= kBlockRows rows, m < M; any M (groups of 4
// rows of x share one pass over the block, which then stays in L1/L2 for the next group).
void dot_rows(const bf16* x, int64_t M, const bf16* w, int64_t nr, int64_t K, float* dots, int64_t ld) {
#ifdef PDSD_CPU_X86
    float tmp[4 * kBlockRows];
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mr = std::min<int64_t>(4, M - m0);
        if (nr == kBlockRows) {
            dot_block_rows<4>(x + m0 * K, K, mr, w, K, tmp);
            for (int64_t m = 0; m < mr; ++m) {
                for (int64_t j = 0; j < 4; ++j) dots[(m0 + m) * ld + j] = tmp[m * 4 + j];
            }
        } else {
            for (int64_t j = 0; j < nr; ++j) {
                dot_block_rows<1>(x + m0 * K, K, mr, w + j * K, K, tmp);
                for (int64_t m = 0; m < mr; ++m) dots[(m0 + m) * ld + j] = tmp[m];
            }
        }
    }
#else
    (void)x, (void)M, (void)w, (void)nr, (void)K, (void)dots, (void)ld;
    throw InternalError("cpu_decode: kernels not compiled for this architecture");
#endif
}

enum class Epilogue { bias, silu_mul, add };

// One weight matrix (or the gate/up pair) and where its rows go.
struct Segment {
    const bf16* w = nullptr;   // (n, K)
    const bf16* w2 = nullptr;  // silu_mul: the up weight (n, K)
    const bf16* bias = nullptr;
    const bf16* residual = nullptr;  // add: (M, n)
    bf16* y = nullptr;               // (M, n)
    int64_t n = 0;
};

constexpr int64_t kChunkRows = 64;  // rows per work item: 16 blocks

#ifdef PDSD_CPU_X86
// The lanes of a 16-lane step that hold data when `left` values remain.
inline __mmask16 lanes16(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// fp32 <-> bf16 on 16 lanes, with c10's rounding (nearest even; NaN -> 0x7FC0).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load_bf16(const bf16* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i bf16_bits(__m512 v) {  // in the low 16 bits
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb)), 16);
    return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r, _mm512_set1_epi32(0x7FC0));
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 round_bf16(__m512 v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(v), 16));
}

// e^x on 16 lanes: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two for accuracy), e^r by
// Cephes' degree-6 polynomial, times 2^n. About 1 ulp of fp32 (std::exp: 0.5), far below the
// bf16 rounding that follows every use. x is clamped to [-87.3, 88.3]: no inf, no denormals.
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(_mm512_mul_ps(y, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

// The epilogue of rows [r0, r0 + n) of segment s for input row m: dots/dots2 hold their fp32
// sums (dots2: the up projection for silu_mul). 16 outputs per step.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void finish_rows(Epilogue epi, const Segment& s, int64_t m, int64_t r0,
                                                                     int64_t n, const float* dots, const float* dots2) {
    bf16* y = s.y + m * s.n + r0;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, dots + i);
        if (epi == Epilogue::bias && s.bias) v = _mm512_add_ps(v, load_bf16(s.bias + r0 + i, k));
        if (epi == Epilogue::add) v = _mm512_add_ps(round_bf16(v), load_bf16(s.residual + m * s.n + r0 + i, k));
        if (epi == Epilogue::silu_mul) {  // at::silu in fp32 on the rounded gate, then the product
            const __m512 g = round_bf16(v);
            const __m512 sg = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
            v = _mm512_mul_ps(round_bf16(sg), round_bf16(_mm512_maskz_loadu_ps(k, dots2 + i)));
        }
        _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(bf16_bits(v)));
    }
}
#else
void finish_rows(Epilogue, const Segment&, int64_t, int64_t, int64_t, const float*, const float*) {
    throw InternalError("cpu_decode: kernels not compiled for this architecture");
}
#endif

// Runs every row of every segment on the intra-op threads (row_chunks.h).
void run(const bf16* x, int64_t M, int64_t K, const std::vector<Segment>& segs, Epilogue epi) {
    auto rows_of = [&](size_t i) { return segs[i].n; };
    for_each_row_chunk<kChunkRows>(segs.size(), rows_of, M, [&](size_t i, int64_t r0, int64_t rows, float* dots, float* dots2) {
        const Segment& s = segs[i];
        for (int64_t j = 0; j < rows; j += kBlockRows) {
            const int64_t nr = std::min(kBlockRows, rows - j);
            dot_rows(x, M, s.w + (r0 + j) * K, nr, K, dots + j, kChunkRows);
            if (epi == Epilogue::silu_mul) dot_rows(x, M, s.w2 + (r0 + j) * K, nr, K, dots2 + j, kChunkRows);
        }
        for (int64_t m = 0; m < M; ++m) finish_rows(epi, s, m, r0, rows, dots + m * kChunkRows, dots2 + m * kChunkRows);
    });
}

const bf16* ptr(const at::Tensor& t) { return t.defined() ? static_cast<const bf16*>(t.data_ptr()) : nullptr; }

void check_weight(const at::Tensor& w, int64_t K) {
    if (w.scalar_type() != at::kBFloat16 || !w.device().is_cpu() || !w.is_contiguous() || w.dim() != 2 || w.size(1) != K) {
        throw InternalError("cpu_decode: weights must be contiguous CPU bf16 (N, " + std::to_string(K) + ")");
    }
}

// x (..., K) as contiguous (M, K) rows, and the output shape (..., n).
at::Tensor rows_of(const at::Tensor& x) { return x.reshape({-1, x.size(-1)}).contiguous(); }
std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n) {
    auto s = x.sizes().vec();
    s.back() = n;
    return s;
}

}  // namespace

bool cpu_supported() {
    static const bool ok = [] {
#ifdef PDSD_CPU_X86
        const char* env = std::getenv("PDSD_CPU_DECODE");
        if (env && std::string(env) == "0") return false;
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512bf16");
#else
        return false;
#endif
    }();
    return ok;
}

bool applies(const at::Tensor& x, const at::Tensor& weight) {
    if (!x.defined() || x.dim() < 1 || x.scalar_type() != at::kBFloat16 || !x.device().is_cpu()) return false;
    const int64_t K = x.size(-1);
    if (K == 0 || x.numel() / K > kMaxRows) return false;
    if (at::GradMode::is_enabled() && (x.requires_grad() || (weight.defined() && weight.requires_grad()))) return false;
    if (weight.defined() && (weight.scalar_type() != at::kBFloat16 || !weight.device().is_cpu() || !weight.is_contiguous() ||
                             weight.dim() != 2 || weight.size(1) != K)) {
        return false;
    }
    return cpu_supported();
}

std::vector<at::Tensor> linear(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                               const std::vector<at::Tensor>& biases) {
    at::Tensor xr = rows_of(x);
    const int64_t M = xr.size(0), K = xr.size(1);
    std::vector<Segment> segs;
    std::vector<at::Tensor> outs;
    for (size_t i = 0; i < weights.size(); ++i) {
        check_weight(weights[i], K);
        const int64_t n = weights[i].size(0);
        outs.push_back(at::empty({M, n}, xr.options()));
        Segment s;
        s.w = ptr(weights[i]);
        s.bias = i < biases.size() ? ptr(biases[i]) : nullptr;
        s.y = static_cast<bf16*>(outs.back().data_ptr());
        s.n = n;
        segs.push_back(s);
    }
    run(ptr(xr), M, K, segs, Epilogue::bias);
    for (size_t i = 0; i < outs.size(); ++i) outs[i] = outs[i].view(out_shape(x, weights[i].size(0)));
    return outs;
}

namespace {
// One segment s (weights and inputs set, s.n rows): allocates its (M, n) output, runs it and
// returns it shaped (..., n) like x. xr: x as contiguous rows.
at::Tensor run_one(const at::Tensor& x, const at::Tensor& xr, Segment s, Epilogue epi) {
    at::Tensor y = at::empty({xr.size(0), s.n}, xr.options());
    s.y = static_cast<bf16*>(y.data_ptr());
    run(ptr(xr), xr.size(0), xr.size(1), {s}, epi);
    return y.view(out_shape(x, s.n));
}
}  // namespace

at::Tensor silu_mul(const at::Tensor& x, const at::Tensor& w_gate, const at::Tensor& w_up) {
    at::Tensor xr = rows_of(x);
    check_weight(w_gate, xr.size(1));
    check_weight(w_up, xr.size(1));
    if (w_up.size(0) != w_gate.size(0)) throw InternalError("cpu_decode::silu_mul: gate and up weights differ in rows");
    Segment s;
    s.w = ptr(w_gate);
    s.w2 = ptr(w_up);
    s.n = w_gate.size(0);
    return run_one(x, xr, s, Epilogue::silu_mul);
}

at::Tensor linear_add(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& residual) {
    at::Tensor xr = rows_of(x);
    check_weight(weight, xr.size(1));
    at::Tensor res = residual.to(at::kBFloat16).reshape({-1, weight.size(0)}).contiguous();
    if (res.size(0) != xr.size(0)) throw InternalError("cpu_decode::linear_add: residual rows differ from the input's");
    Segment s;
    s.w = ptr(weight);
    s.residual = ptr(res);
    s.n = weight.size(0);
    return run_one(x, xr, s, Epilogue::add);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::Tensor xr = rows_of(x);
    const int64_t M = xr.size(0), H = xr.size(1);
    if (weight.numel() != H || weight.scalar_type() != at::kBFloat16 || !weight.is_contiguous()) {
        throw InternalError("cpu_decode::rms_norm: weight must be contiguous bf16 (" + std::to_string(H) + ")");
    }
    at::Tensor y = at::empty_like(xr);
    const bf16* xp = ptr(xr);
    const bf16* w = ptr(weight);
    bf16* yp = static_cast<bf16*>(y.data_ptr());
    for (int64_t m = 0; m < M; ++m) {
        const bf16* row = xp + m * H;
        float ss = 0.0f;
        for (int64_t i = 0; i < H; ++i) ss += to_float(row[i]) * to_float(row[i]);
        const float r = 1.0f / std::sqrt(ss / static_cast<float>(H) + static_cast<float>(eps));  // at::rsqrt
        for (int64_t i = 0; i < H; ++i) yp[m * H + i] = to_bf16(to_float(w[i]) * round_bf16_scalar(to_float(row[i]) * r));
    }
    return y.view(x.sizes());
}

void rotary_(at::Tensor& x, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin) {
    if (!x.is_contiguous() || x.scalar_type() != at::kBFloat16 || x.dim() != 2 || x.size(1) % head_dim != 0 || head_dim % 2) {
        throw InternalError("cpu_decode::rotary_: x must be contiguous bf16 (rows, heads * head_dim)");
    }
    at::Tensor c = rows_of(cos.to(at::kBFloat16)), sn = rows_of(sin.to(at::kBFloat16));
    const int64_t R = x.size(0), heads = x.size(1) / head_dim, half = head_dim / 2;
    if (c.size(0) != R || c.size(1) != head_dim || sn.sizes() != c.sizes()) {
        throw InternalError("cpu_decode::rotary_: cos/sin must be (rows, head_dim)");
    }
    bf16* xp = static_cast<bf16*>(x.data_ptr());
    for (int64_t r = 0; r < R; ++r) {
        const bf16* cr = ptr(c) + r * head_dim;
        const bf16* sr = ptr(sn) + r * head_dim;
        for (int64_t h = 0; h < heads; ++h) {
            bf16* v = xp + (r * heads + h) * head_dim;
            for (int64_t i = 0; i < half; ++i) {
                const float a = to_float(v[i]), b = to_float(v[i + half]);  // rotate_half: [-b, a]
                v[i] = to_bf16(round_bf16_scalar(a * to_float(cr[i])) + round_bf16_scalar(-b * to_float(sr[i])));
                v[i + half] = to_bf16(round_bf16_scalar(b * to_float(cr[i + half])) + round_bf16_scalar(a * to_float(sr[i + half])));
            }
        }
    }
}

namespace {
#ifdef PDSD_CPU_X86
// Attention for the query heads [h0, h0 + nq) of one kv head, nq <= 4: q (nq, 16 * V) bf16,
// keys/values (L, 16 * V) bf16 rows, out (nq, 16 * V) bf16. p: scratch of nq * L floats.
// Scores by VDPBF16PS, softmax with exp512, then each value row is widened once and
// accumulated into all nq heads' fp32 sums (the heads of a GQA group share their keys).
template <int V>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void attend_heads(const bf16* q, int64_t nq, const bf16* k,
                                                                                const bf16* v, int64_t L, float scale,
                                                                                float* p, bf16* out) {
    constexpr int64_t hd = 16 * V;
    const __mmask32 half = V % 2 ? static_cast<__mmask32>(0xFFFF) : static_cast<__mmask32>(0xFFFFFFFF);
    for (int64_t h = 0; h < nq; ++h) {
        float* ph = p + h * L;
        const bf16* qh = q + h * hd;
        for (int64_t j = 0; j < L; ++j) {
            const bf16* kj = k + j * hd;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t d = 0; d < hd; d += 32) {  // hd = 16: one half-width step
                const __mmask32 m = d + 32 <= hd ? static_cast<__mmask32>(0xFFFFFFFF) : half;
                acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, qh + d), (__m512bh)_mm512_maskz_loadu_epi16(m, kj + d));
            }
            ph[j] = _mm512_reduce_add_ps(acc) * scale;
        }
        // softmax numerators in place; the sum divides at the end
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < L; j += 16) {
            const __mmask16 m = lanes16(L - j);
            mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, ph + j));
        }
        const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < L; j += 16) {
            const __mmask16 m = lanes16(L - j);
            const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, ph + j), top));
            sum = _mm512_mask_add_ps(sum, m, sum, e);
            _mm512_mask_storeu_ps(ph + j, m, e);
        }
        const float inv = 1.0f / _mm512_reduce_add_ps(sum);
        for (int64_t j = 0; j < L; ++j) ph[j] *= inv;
    }
    __m512 acc[4][V];
    for (auto& a : acc) {
        for (auto& c : a) c = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < L; ++j) {
        __m512 vv[V];
        for (int c = 0; c < V; ++c) vv[c] = load_bf16(v + j * hd + 16 * c, 0xFFFF);
        for (int64_t h = 0; h < nq; ++h) {
            const __m512 w = _mm512_set1_ps(p[h * L + j]);
            for (int c = 0; c < V; ++c) acc[h][c] = _mm512_fmadd_ps(w, vv[c], acc[h][c]);
        }
    }
    for (int64_t h = 0; h < nq; ++h) {
        for (int c = 0; c < V; ++c) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + h * hd + 16 * c), _mm512_cvtepi32_epi16(bf16_bits(acc[h][c])));
    }
}
#endif

// The same for any head_dim, in plain loops (head_dim not 16, 32, 64 or 128; other CPUs).
void attend_heads_scalar(const bf16* q, int64_t nq, const bf16* k, const bf16* v, int64_t L, int64_t hd, float scale,
                         float* p, bf16* out) {
    std::vector<float> acc(static_cast<size_t>(hd));
    for (int64_t h = 0; h < nq; ++h) {
        float* ph = p + h * L;
        float mx = -INFINITY;
        for (int64_t j = 0; j < L; ++j) {
            float d = 0.0f;
            for (int64_t i = 0; i < hd; ++i) d += to_float(q[h * hd + i]) * to_float(k[j * hd + i]);
            mx = std::max(mx, ph[j] = d * scale);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < L; ++j) sum += ph[j] = std::exp(ph[j] - mx);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < L; ++j) {
            for (int64_t i = 0; i < hd; ++i) acc[static_cast<size_t>(i)] += ph[j] * to_float(v[j * hd + i]);
        }
        for (int64_t i = 0; i < hd; ++i) out[h * hd + i] = to_bf16(acc[static_cast<size_t>(i)] / sum);
    }
}
}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t L, int64_t n_heads) {
    at::Tensor qr = rows_of(q);
    const int64_t B = qr.size(0);
    if (k_cache.dim() != 4 || !k_cache.is_contiguous() || !v_cache.is_contiguous() || k_cache.sizes() != v_cache.sizes() ||
        k_cache.size(0) != B || k_cache.scalar_type() != at::kBFloat16 || L < 1 || L > k_cache.size(2)) {
        throw InternalError("cpu_decode::attention: caches must be contiguous bf16 (B, n_kv, max_len, hd) holding L keys");
    }
    const int64_t n_kv = k_cache.size(1), M = k_cache.size(2), hd = k_cache.size(3), group = n_heads / n_kv;
    if (qr.size(1) != n_heads * hd || n_heads % n_kv) throw InternalError("cpu_decode::attention: q must be (B, n_heads * hd)");
    at::Tensor out = at::empty({B, n_heads * hd}, qr.options());
    const bf16 *qp = ptr(qr), *kp = ptr(k_cache), *vp = ptr(v_cache);
    bf16* op = static_cast<bf16*>(out.data_ptr());
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    // Tasks: up to 4 query heads of one kv head of one row. Threads only once the cache is
    // long enough to pay for waking them (~4k key rows of work per task group).
    const int64_t chunks = (group + 3) / 4, tasks = B * n_kv * chunks;
    const int64_t grain = std::max<int64_t>(1, 4096 / (L * std::min<int64_t>(4, group)));
    at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
        std::vector<float> p(static_cast<size_t>(4 * L));
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t b = t / (n_kv * chunks), g = t / chunks % n_kv, h0 = g * group + t % chunks * 4;
            const int64_t nq = std::min<int64_t>(4, (g + 1) * group - h0);
            const bf16* qh = qp + (b * n_heads + h0) * hd;
            const bf16* kh = kp + (b * n_kv + g) * M * hd;
            const bf16* vh = vp + (b * n_kv + g) * M * hd;
            bf16* oh = op + (b * n_heads + h0) * hd;
#ifdef PDSD_CPU_X86
            switch (hd) {
                case 16: attend_heads<1>(qh, nq, kh, vh, L, scale, p.data(), oh); continue;
                case 32: attend_heads<2>(qh, nq, kh, vh, L, scale, p.data(), oh); continue;
                case 64: attend_heads<4>(qh, nq, kh, vh, L, scale, p.data(), oh); continue;
                case 128: attend_heads<8>(qh, nq, kh, vh, L, scale, p.data(), oh); continue;
                default: break;
            }
#endif
            attend_heads_scalar(qh, nq, kh, vh, L, hd, scale, p.data(), oh);
        }
    });
    return out;
}

}  // namespace pdsd::model::cpu_decode
