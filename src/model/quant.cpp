// Weight-only quantization and its CPU kernels; see quant.h. The ISA-specific inner loops live
// in quant_avx2.cpp / quant_avx512.cpp (quant_kernels.h); this file holds the formats, the
// scalar loop, the dispatch, the threading and the epilogues.
#include "pdsd/model/quant.h"
#include "pdsd/model/quant_cache.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/qwen2.h"

#include "layer_projections.h"
#include "quant_kernels.h"
#include "row_chunks.h"

#include <ATen/ATen.h>

#include <sys/mman.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>


namespace pdsd::model::quant {

int64_t QuantWeight::nbytes() const {
    int64_t b = 0;
    for (const at::Tensor* t : {&q, &scale, &min}) {
        if (t->defined()) b += t->numel() * static_cast<int64_t>(t->element_size());
    }
    return b;
}

namespace {

inline uint16_t half_bits(float f) { return c10::Half(f).x; }
inline float half_value(uint16_t h) { return static_cast<float>(c10::Half(h, c10::Half::from_bits())); }
inline float to_half_precision(float f) { return half_value(half_bits(std::min(std::max(f, -65504.0f), 65504.0f))); }

// One group of `n` <= 32 weights (the rest of the group is padding) -> q[0, 32) and its scale.
void quantize_group8(const float* w, int64_t n, int8_t* q, uint16_t* scale) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
    const float d = to_half_precision(amax / 127.0f);
    *scale = half_bits(d);
    for (int64_t i = 0; i < kGroup; ++i) {
        const float v = i < n && d > 0.0f ? std::nearbyint(w[i] / d) : 0.0f;
        q[i] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, v)));
    }
}

// q[i] = clamp(round((w - m) / d), 0, 15) for i < n; returns the squared error.
float assign4(const float* w, int64_t n, float d, float m, uint8_t* q) {
    float err = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        const float v = d > 0.0f ? std::nearbyint((w[i] - m) / d) : 0.0f;
        q[i] = static_cast<uint8_t>(std::min(15.0f, std::max(0.0f, v)));
        const float e = d * static_cast<float>(q[i]) + m - w[i];
        err += e * e;
    }
    return err;
}

// One int4 group: min/max start, then two least-squares refits of (d, m) to the chosen q,
// keeping the best (d, m) seen. Packs element i into the low nibble of byte i (i < 16) or
// the high nibble of byte i - 16.
void quantize_group4(const float* w, int64_t n, uint8_t* packed, uint16_t* scale, uint16_t* minimum) {
    float lo = w[0], hi = w[0];
    for (int64_t i = 1; i < n; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
    float d = to_half_precision((hi - lo) / 15.0f), m = to_half_precision(lo);
    uint8_t q[kGroup] = {}, best[kGroup] = {};
    float best_err = assign4(w, n, d, m, best), best_d = d, best_m = m;
    std::memcpy(q, best, sizeof q);
    for (int round = 0; round < 2; ++round) {
        double sq = 0, sq2 = 0, sw = 0, sqw = 0;
        for (int64_t i = 0; i < n; ++i) {
            sq += q[i], sq2 += static_cast<double>(q[i]) * q[i], sw += w[i], sqw += static_cast<double>(q[i]) * w[i];
        }
        const double det = sq2 * static_cast<double>(n) - sq * sq;
        if (det <= 0) break;  // every q equal: (d, m) already exact for the mean
        d = to_half_precision(static_cast<float>((sqw * static_cast<double>(n) - sq * sw) / det));
        m = to_half_precision(static_cast<float>((sq2 * sw - sq * sqw) / det));
        if (!(d > 0.0f)) break;
        const float err = assign4(w, n, d, m, q);
        if (err < best_err) best_err = err, best_d = d, best_m = m, std::memcpy(best, q, sizeof q);
    }
    *scale = half_bits(best_d);
    *minimum = half_bits(best_m);
    for (int64_t i = 0; i < kGroup / 2; ++i) packed[i] = static_cast<uint8_t>(best[i] | (best[i + kGroup / 2] << 4));
}

// Rows [r0, r1) of w' in fp32 into out (r1 - r0, w.k).
void dequantize_into(const QuantWeight& w, int64_t r0, int64_t r1, float* out) {
    const int64_t G = w.kp / kGroup;
    const auto* sc = static_cast<const uint16_t*>(w.scale.data_ptr());
    for (int64_t r = r0; r < r1; ++r) {
        float* o = out + (r - r0) * w.k;
        for (int64_t k = 0; k < w.k; ++k) {
            const int64_t g = k / kGroup, i = k % kGroup;
            const float d = half_value(sc[r * G + g]);
            if (w.type == Type::int8) {
                o[k] = d * static_cast<float>(static_cast<const int8_t*>(w.q.data_ptr())[r * w.kp + k]);
            } else {
                const uint8_t b = static_cast<const uint8_t*>(w.q.data_ptr())[r * w.kp / 2 + g * 16 + i % 16];
                const float q = static_cast<float>(i < 16 ? b & 0x0F : b >> 4);
                o[k] = d * q + half_value(static_cast<const uint16_t*>(w.min.data_ptr())[r * G + g]);
            }
        }
    }
}

// ---- kernel dispatch ----

enum class Isa { scalar, avx2, avx512 };

bool runs(Isa i) {
#if defined(__x86_64__) && defined(__GNUC__) && defined(PDSD_QUANT_X86)
    if (i == Isa::avx512) {
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    }
    if (i == Isa::avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    return i == Isa::scalar;
}

const char* name_of(Isa i) { return i == Isa::avx512 ? "avx512" : i == Isa::avx2 ? "avx2" : "scalar"; }

std::atomic<int>& current() {
    static std::atomic<int> isa{[] {
        Isa best = runs(Isa::avx512) ? Isa::avx512 : runs(Isa::avx2) ? Isa::avx2 : Isa::scalar;
        if (const char* env = std::getenv("PDSD_QUANT_ISA")) {
            for (Isa i : {Isa::avx512, Isa::avx2, Isa::scalar}) {
                if (std::string(env) == name_of(i) && runs(i)) best = i;
            }
        }
        return static_cast<int>(best);
    }()};
    return isa;
}

void dot_scalar(const float* x, int64_t ldx, int64_t M, const QuantWeight& w, int64_t r0, int64_t n, float* out, int64_t ldo) {
    std::vector<float> row(static_cast<size_t>(w.k));
    for (int64_t r = 0; r < n; ++r) {
        dequantize_into(w, r0 + r, r0 + r + 1, row.data());
        for (int64_t m = 0; m < M; ++m) {
            float s = 0.0f;
            for (int64_t k = 0; k < w.k; ++k) s += x[m * ldx + k] * row[static_cast<size_t>(k)];
            out[m * ldo + r] = s;
        }
    }
}

// out[m * ldo + j] = x[m] . w'[r0 + j] for j < n. x (M, kp) fp32 zero-padded; xsum (M, kp / 32).
void dot(const float* x, const float* xsum, int64_t M, const QuantWeight& w, int64_t r0, int64_t n, float* out, int64_t ldo) {
    const int64_t G = w.kp / kGroup;
    const auto* sc = static_cast<const uint16_t*>(w.scale.data_ptr()) + r0 * G;
    const auto isa = static_cast<Isa>(current().load(std::memory_order_relaxed));
#ifdef PDSD_QUANT_X86
    if (isa != Isa::scalar && w.type == Type::int8) {
        const int8_t* q = static_cast<const int8_t*>(w.q.data_ptr()) + r0 * w.kp;
        (isa == Isa::avx512 ? kernels::dot_q8_avx512 : kernels::dot_q8_avx2)(x, w.kp, M, q, sc, n, w.kp, out, ldo);
        return;
    }
    if (isa != Isa::scalar && w.type == Type::int4) {
        const uint8_t* q = static_cast<const uint8_t*>(w.q.data_ptr()) + r0 * w.kp / 2;
        const auto* mn = static_cast<const uint16_t*>(w.min.data_ptr()) + r0 * G;
        (isa == Isa::avx512 ? kernels::dot_q4_avx512 : kernels::dot_q4_avx2)(x, w.kp, M, q, sc, mn, xsum, n, w.kp, out, ldo);
        return;
    }
#else
    (void)isa, (void)sc, (void)xsum;
#endif
    dot_scalar(x, w.kp, M, w, r0, n, out, ldo);
}

// ---- the fused calls ----

enum class Epilogue { bias, silu_mul, add };

struct Segment {
    const QuantWeight* w = nullptr;
    const QuantWeight* w2 = nullptr;  // silu_mul: up
    const float* bias = nullptr;      // (n) fp32
    const float* residual = nullptr;  // add: (M, n) fp32
    float* y = nullptr;               // (M, n) fp32
};

constexpr int64_t kChunkRows = 64;  // weight rows per work item

// All rows of all segments on the intra-op threads (row_chunks.h). x (M, kp) fp32
// zero-padded, xsum its group sums.
void run(const float* x, const float* xsum, int64_t M, const std::vector<Segment>& segs, Epilogue epi) {
    auto rows_of = [&](size_t i) { return segs[i].w->n; };
    for_each_row_chunk<kChunkRows>(segs.size(), rows_of, M, [&](size_t i, int64_t r0, int64_t rows, float* dots, float* dots2) {
        const Segment& s = segs[i];
        const int64_t n = s.w->n;
        dot(x, xsum, M, *s.w, r0, rows, dots, kChunkRows);
        if (epi == Epilogue::silu_mul) dot(x, xsum, M, *s.w2, r0, rows, dots2, kChunkRows);
        for (int64_t m = 0; m < M; ++m) {
            const float* d = dots + m * kChunkRows;
            float* y = s.y + m * n + r0;
            for (int64_t j = 0; j < rows; ++j) {
                float v = d[j];
                if (epi == Epilogue::bias && s.bias) v += s.bias[r0 + j];
                if (epi == Epilogue::add) v += s.residual[m * n + r0 + j];
                if (epi == Epilogue::silu_mul) v = v / (1.0f + std::exp(-v)) * dots2[m * kChunkRows + j];
                y[j] = v;
            }
        }
    });
}

void check_input(const at::Tensor& x, const QuantWeight& w) {
    if (!x.device().is_cpu() || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) || x.size(-1) != w.k) {
        throw InternalError("quant: x must be CPU fp32/bf16 (..., " + std::to_string(w.k) + "), found " +
                            std::string(c10::toString(x.scalar_type())) + " (..., " + std::to_string(x.size(-1)) + ")");
    }
    if (at::GradMode::is_enabled() && x.requires_grad()) {
        throw UsageError(ErrorInfo{}.at("--quant").msg("quantized weights are for inference only").hint("train without --quant"));
    }
}

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n) {
    auto s = x.sizes().vec();
    s.back() = n;
    return s;
}

// Rows of x as fp32 (M, kp) zero-padded, and for int4 their group sums (M, kp / 32).
struct Rows {
    at::Tensor x, xsum;
};
Rows rows_of(const at::Tensor& x, int64_t kp) {
    at::Tensor xr = x.reshape({-1, x.size(-1)}).to(at::kFloat);
    Rows r;
    r.x = xr.size(1) == kp ? xr.contiguous() : at::constant_pad_nd(xr, {0, kp - xr.size(1)}).contiguous();
    r.xsum = r.x.view({r.x.size(0), kp / kGroup, kGroup}).sum(-1).contiguous();
    return r;
}

// M > kMaxRows (prefill): x W'^T by chunks of dequantized rows through ATen's matmul. (M, n) fp32.
at::Tensor matmul_dequantized(const at::Tensor& xf, const QuantWeight& w) {
    at::Tensor y = at::empty({xf.size(0), w.n}, xf.options());
    const int64_t chunk = std::max<int64_t>(64, (int64_t{1} << 20) / std::max<int64_t>(1, w.k));  // ~4 MB of fp32
    at::Tensor buf = at::empty({std::min(chunk, w.n), w.k}, xf.options());
    for (int64_t r0 = 0; r0 < w.n; r0 += chunk) {
        const int64_t n = std::min(chunk, w.n - r0);
        at::Tensor b = buf.narrow(0, 0, n);
        float* bp = b.data_ptr<float>();
        at::parallel_for(0, n, 16, [&](int64_t a, int64_t e) { dequantize_into(w, r0 + a, r0 + e, bp + a * w.k); });
        y.narrow(1, r0, n).copy_(at::mm(xf, b.t()));
    }
    return y;
}

std::vector<at::Tensor> compute(const at::Tensor& x, std::vector<Segment> segs, Epilogue epi);

// A short prefill (a chat prompt: tens of rows) streams the weights once per block of kMaxRows
// rows: ceil(M / 8) passes over the quantized bytes cost less than dequantizing every weight
// to fp32 for ATen (~1.7 s per prompt for Qwen2.5-0.5B int4 on 2 cores, whatever M is).
// Measured (`model bench --quant int4`, 2 threads, loaded 2-core VM): 34 rows 0.48 s against
// 1.7-1.8 s; at 128 rows about even on a quiet machine and far worse under contention (the
// many short parallel regions), hence 64.
constexpr int64_t kStreamedRows = 64;

std::vector<at::Tensor> compute_by_blocks(const at::Tensor& x, const std::vector<Segment>& segs, Epilogue epi) {
    const int64_t K = x.size(-1), M = x.numel() / K;
    at::Tensor x2 = x.reshape({M, K});
    std::vector<std::vector<at::Tensor>> parts(segs.size());
    for (int64_t m0 = 0; m0 < M; m0 += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, M - m0);
        std::vector<Segment> block = segs;
        for (Segment& s : block) {
            if (s.residual) s.residual += m0 * s.w->n;  // add: (M, n) rows m0..
        }
        std::vector<at::Tensor> ys = compute(x2.narrow(0, m0, rows), std::move(block), epi);
        for (size_t i = 0; i < ys.size(); ++i) parts[i].push_back(ys[i]);
    }
    std::vector<at::Tensor> out;
    for (auto& p : parts) out.push_back(at::cat(p, 0));
    return out;
}

// The shared body of the public calls: outputs (M, n_i) fp32 for each segment.
std::vector<at::Tensor> compute(const at::Tensor& x, std::vector<Segment> segs, Epilogue epi) {
    const QuantWeight& w0 = *segs[0].w;
    std::vector<at::Tensor> ys;
    const int64_t M = x.numel() / x.size(-1);
    if (M > kMaxRows && M <= kStreamedRows) return compute_by_blocks(x, std::move(segs), epi);
    if (M > kMaxRows) {
        at::Tensor xf = x.reshape({M, x.size(-1)}).to(at::kFloat).contiguous();
        for (const Segment& s : segs) {
            at::Tensor y = matmul_dequantized(xf, *s.w);
            if (epi == Epilogue::bias && s.bias) y.add_(at::from_blob(const_cast<float*>(s.bias), {s.w->n}, xf.options()));
            if (epi == Epilogue::silu_mul) y = at::silu(y) * matmul_dequantized(xf, *s.w2);
            if (epi == Epilogue::add) y.add_(at::from_blob(const_cast<float*>(s.residual), {M, s.w->n}, xf.options()));
            ys.push_back(y);
        }
        return ys;
    }
    Rows r = rows_of(x, w0.kp);
    for (Segment& s : segs) {
        if (s.w->kp != w0.kp) throw InternalError("quant: fused weights differ in K");
        ys.push_back(at::empty({M, s.w->n}, r.x.options()));
        s.y = ys.back().data_ptr<float>();
    }
    run(r.x.data_ptr<float>(), r.xsum.data_ptr<float>(), M, segs, epi);
    return ys;
}

at::Tensor finish(const at::Tensor& y, const at::Tensor& x) { return y.to(x.scalar_type()).view(out_shape(x, y.size(1))); }

}  // namespace

QuantWeight quantize(const at::Tensor& w, Type type) {
    if (type == Type::none || w.dim() != 2 || !w.device().is_cpu()) throw InternalError("quant::quantize: a CPU (N, K) weight and int8/int4");
    QuantWeight qw;
    qw.type = type;
    qw.n = w.size(0);
    qw.k = w.size(1);
    qw.kp = (qw.k + kGroup - 1) / kGroup * kGroup;
    const int64_t G = qw.kp / kGroup;
    auto u8 = at::TensorOptions().dtype(type == Type::int8 ? at::kChar : at::kByte);
    qw.q = at::empty({qw.n, type == Type::int8 ? qw.kp : qw.kp / 2}, u8);
    qw.scale = at::empty({qw.n, G}, at::TensorOptions().dtype(at::kHalf));
    if (type == Type::int4) qw.min = at::empty({qw.n, G}, at::TensorOptions().dtype(at::kHalf));
    // parallel_for hands each thread one range of ~N / threads rows: widen them to fp32 64 rows
    // at a time (a whole range of the 151,936-row embedding would be ~270 MB per thread).
    constexpr int64_t kChunk = 64;
    at::parallel_for(0, qw.n, kChunk, [&](int64_t r0, int64_t r1) {
      for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
        const int64_t c1 = std::min(r1, c0 + kChunk);
        at::Tensor rows = w.narrow(0, c0, c1 - c0).to(at::kFloat).contiguous();  // (c1 - c0, K)
        const float* src = rows.data_ptr<float>();
        auto* sc = static_cast<uint16_t*>(qw.scale.data_ptr());
        for (int64_t r = c0; r < c1; ++r) {
            const float* row = src + (r - c0) * qw.k;
            for (int64_t g = 0; g < G; ++g) {
                const int64_t n = std::min(kGroup, qw.k - g * kGroup);
                if (type == Type::int8) {
                    quantize_group8(row + g * kGroup, n, static_cast<int8_t*>(qw.q.data_ptr()) + r * qw.kp + g * kGroup, sc + r * G + g);
                } else {
                    quantize_group4(row + g * kGroup, n, static_cast<uint8_t*>(qw.q.data_ptr()) + r * qw.kp / 2 + g * 16, sc + r * G + g,
                                    static_cast<uint16_t*>(qw.min.data_ptr()) + r * G + g);
                }
            }
        }
      }
    });
    return qw;
}

at::Tensor dequantize(const QuantWeight& w) {
    at::Tensor out = at::empty({w.n, w.k}, at::TensorOptions().dtype(at::kFloat));
    float* p = out.data_ptr<float>();
    at::parallel_for(0, w.n, 64, [&](int64_t r0, int64_t r1) { dequantize_into(w, r0, r1, p + r0 * w.k); });
    return out;
}

at::Tensor dequantize_rows(const QuantWeight& w, const at::Tensor& ids, c10::ScalarType dtype) {
    at::Tensor flat = ids.reshape({-1}).to(at::kCPU, at::kLong).contiguous();
    const int64_t T = flat.numel();
    at::Tensor out = at::empty({T, w.k}, at::TensorOptions().dtype(at::kFloat));
    const int64_t* id = flat.data_ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t) {
        if (id[t] < 0 || id[t] >= w.n) throw ShapeError(ErrorInfo{}.at("token id").expected("< " + std::to_string(w.n)).found(std::to_string(id[t])));
        dequantize_into(w, id[t], id[t] + 1, out.data_ptr<float>() + t * w.k);
    }
    auto sizes = ids.sizes().vec();
    sizes.push_back(w.k);
    return out.to(dtype).view(sizes);
}

std::string isa() { return name_of(static_cast<Isa>(current().load())); }

std::vector<std::string> available_isas() {
    std::vector<std::string> v;
    for (Isa i : {Isa::avx512, Isa::avx2, Isa::scalar}) {
        if (runs(i)) v.emplace_back(name_of(i));
    }
    return v;
}

bool force_isa(const std::string& name) {
    for (Isa i : {Isa::avx512, Isa::avx2, Isa::scalar}) {
        if (name == name_of(i) && runs(i)) {
            current().store(static_cast<int>(i));
            return true;
        }
    }
    return false;
}

std::vector<at::Tensor> linear(const at::Tensor& x, const std::vector<const QuantWeight*>& weights,
                               const std::vector<at::Tensor>& biases) {
    std::vector<Segment> segs;
    std::vector<at::Tensor> keep;  // fp32 biases
    for (size_t i = 0; i < weights.size(); ++i) {
        check_input(x, *weights[i]);
        Segment s;
        s.w = weights[i];
        if (i < biases.size() && biases[i].defined()) {
            keep.push_back(biases[i].to(at::kFloat).contiguous());
            s.bias = keep.back().data_ptr<float>();
        }
        segs.push_back(s);
    }
    std::vector<at::Tensor> ys = compute(x, segs, Epilogue::bias);
    for (auto& y : ys) y = finish(y, x);
    return ys;
}

at::Tensor silu_mul(const at::Tensor& x, const QuantWeight& gate, const QuantWeight& up) {
    check_input(x, gate);
    if (up.n != gate.n || up.k != gate.k) throw InternalError("quant::silu_mul: gate and up shapes differ");
    Segment s;
    s.w = &gate;
    s.w2 = &up;
    return finish(compute(x, {s}, Epilogue::silu_mul)[0], x);
}

at::Tensor linear_add(const at::Tensor& x, const QuantWeight& w, const at::Tensor& residual) {
    check_input(x, w);
    at::Tensor res = residual.reshape({-1, w.n}).to(at::kFloat).contiguous();
    if (res.size(0) * x.size(-1) != x.numel()) throw InternalError("quant::linear_add: residual rows differ from the input's");
    Segment s;
    s.w = &w;
    s.residual = res.data_ptr<float>();
    return finish(compute(x, {s}, Epilogue::add)[0], x);
}

void release_float_weight(at::Tensor& p, std::optional<c10::ScalarType> dtype) {
    // A weight viewing the mapped checkpoint (LoadOptions::quant) keeps its pages in this
    // process until the whole mapping goes: unmap its whole pages now (the page cache keeps
    // them), so quantizing tensor by tensor never holds every float page at once. Only when no
    // other tensor shares the storage (on heap memory it is freed just after anyway).
    if (p.device().is_cpu() && p.is_contiguous() && p.storage().use_count() == 1 && p.numel() > 0) {
        const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        const auto begin = reinterpret_cast<uintptr_t>(p.data_ptr());
        const uintptr_t lo = (begin + page - 1) & ~(page - 1), hi = (begin + p.nbytes()) & ~(page - 1);
        if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    }
    p.set_data(at::zeros({1}, p.options().dtype(dtype.value_or(p.scalar_type()))).expand(p.sizes()));
}

bool is_quantized_weight(const std::string& name) {
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return true;
    if (name.rfind("model.layers.", 0) != 0) return false;
    for (const char* proj : kLayerProjectionNames) {
        const std::string suffix = std::string(".") + proj + ".weight";
        if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
    }
    return false;
}

std::vector<Slot> model_slots(LoadedModel& lm, Type type) {
    auto& m = *lm.model;
    const Type small = Type::int8;  // int4 mode: v_proj and embedding / lm_head stay int8 (quant.h)
    std::vector<Slot> slots;
    auto add = [&](const std::string& name, Proj& p, Type t) { slots.push_back({name, &p->weight, &p->quant, t}); };
    for (size_t i = 0; i < m.model->layers.size(); ++i) {
        auto& layer = *m.model->layers[i];
        const std::string pre = "model.layers." + std::to_string(i) + ".";
        const auto projs = layer_projections(layer);
        for (size_t j = 0; j < projs.size(); ++j) {
            add(pre + kLayerProjectionNames[j] + ".weight", *projs[j], projs[j] == &layer.self_attn->v_proj ? small : type);
        }
    }
    auto& e = *m.model->embed_tokens;
    slots.push_back({"model.embed_tokens.weight", &e.weight, &e.quant, small});
    if (m.lm_head) add("lm_head.weight", m.lm_head, small);
    return slots;
}

int64_t quantize_model(LoadedModel& lm, Type type) {
    if (type == Type::none) return 0;
    if (!lm.device.is_cpu()) {
        throw UsageError(ErrorInfo{}.at("--quant").msg("weight quantization runs on the CPU only").found("device " + lm.device.str())
                             .hint("drop --quant, or use --device cpu"));
    }
    at::NoGradGuard no_grad;
    int64_t bytes = 0, weights = 0;
    lm.model->release_packed_weights();
    for (const Slot& s : model_slots(lm, type)) {
        auto q = std::make_shared<QuantWeight>(quantize(*s.weight, s.type));
        bytes += q->nbytes();
        weights += s.weight->numel();
        release_float_weight(*s.weight, lm.dtype);  // a weight read in its stored dtype leaves one of the model's
        *s.quant = std::move(q);
    }
    log::info("model", log::cat("quantized ", weights, " weights to ", type_name(type), ": ", bytes / 1000000, " MB (", isa(),
                                " kernels)"));
    return bytes;
}

}  // namespace pdsd::model::quant
