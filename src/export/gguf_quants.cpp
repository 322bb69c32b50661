// ggml block formats written by the GGUF exporter, with the same arithmetic as ggml's reference
// quantizers (quantize_row_*_ref in ggml-quants.c), so that the bytes equal what llama.cpp's own
// `llama-quantize` writes without an importance matrix. Compiled with -ffp-contract=off (see
// src/CMakeLists.txt): ggml's reference code runs without FMA contraction, and a fused a*b+c
// would move some K-quant scale searches to a different (equally good) choice.
//
// Layouts (little-endian, fp16 = IEEE half):
//   Q4_0  32 values, 18 B: fp16 d | u8 qs[16]          x = (q - 8) d       q in 0..15; qs[j] = q[j] | q[j+16] << 4
//   Q5_0  32 values, 22 B: fp16 d | u32 qh | u8 qs[16] x = (q - 16) d      5th bit of q[j] is bit j of qh
//   Q5_1  32 values, 24 B: fp16 d | fp16 m | u32 qh | qs[16]   x = q d + m   q in 0..31
//   Q8_0  32 values, 34 B: fp16 d | i8 qs[32]           x = q d
//   Q4_K 256 values, 144 B: fp16 d | fp16 dmin | u8 scales[12] | u8 qs[128]
//        8 sub-blocks of 32, each with a 6-bit scale sc and 6-bit min m: x = d sc q - dmin m, q in 0..15
//   Q5_K 256 values, 176 B: fp16 d | fp16 dmin | scales[12] | u8 qh[32] | u8 qs[128], q in 0..31
//   Q6_K 256 values, 210 B: u8 ql[128] | u8 qh[64] | i8 scales[16] | fp16 d
//        16 sub-blocks of 16 with an 8-bit signed scale: x = d sc (q - 32), q in 0..63
#include "pdsd/export/gguf.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pdsd::exporter {

namespace {

constexpr int kQK = 32;    // values per block of the 32-value formats
constexpr int kQKK = 256;  // values per K-quant super-block
constexpr float kGroupMaxEps = 1e-15f;  // below this max |x| a group is all zero (ggml GROUP_MAX_EPS)

void put_half(uint8_t* p, float f) {
    uint16_t h = float_to_half(f);
    std::memcpy(p, &h, 2);
}
float get_half(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return half_to_float(h);
}

// Round to nearest, ties to even, via the float-add trick (|f| <= 2^22), as ggml's nearest_int.
int nearest_int(float f) {
    float v = f + 12582912.f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// Value with the largest magnitude (the first one on ties) and that magnitude.
void signed_absmax(const float* x, int n, float& max, float& amax) {
    amax = 0.f;
    max = 0.f;
    for (int j = 0; j < n; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
}

// ---------------------------------------------------------------- 32-value blocks

void q4_0_block(const float* x, uint8_t* o) {
    float max, amax;
    signed_absmax(x, kQK, max, amax);
    const float d = max / -8;  // the extreme value maps to q = 0 exactly (-8 d)
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    put_half(o, d);
    for (int j = 0; j < kQK / 2; ++j) {
        // Truncation of (v + 8.5): round half up, then the +8 offset; 16 (x = -max/... edge) clamps to 15.
        int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
        int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + kQK / 2] * id + 8.5f)));
        o[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
}

void q5_0_block(const float* x, uint8_t* o) {
    float max, amax;
    signed_absmax(x, kQK, max, amax);
    const float d = max / -16;
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    put_half(o, d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
        int q0 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
        int q1 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + kQK / 2] * id + 16.5f)));
        o[6 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
        qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
        qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
    }
    std::memcpy(o + 2, &qh, 4);
}

void q5_1_block(const float* x, uint8_t* o) {
    float min = x[0], max = x[0];
    for (int j = 1; j < kQK; ++j) {
        min = std::min(min, x[j]);
        max = std::max(max, x[j]);
    }
    const float d = (max - min) / 31;
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    put_half(o, d);
    put_half(o + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
        int q0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
        int q1 = static_cast<uint8_t>((x[j + kQK / 2] - min) * id + 0.5f);
        o[8 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
        qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
        qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
    }
    std::memcpy(o + 4, &qh, 4);
}

void q8_0_block(const float* x, uint8_t* o) {
    float amax = 0.f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.0f / d : 0.0f;
    put_half(o, d);
    for (int j = 0; j < kQK; ++j) {
        int8_t q = static_cast<int8_t>(std::roundf(x[j] * id));  // roundf: half away from zero, as ggml
        std::memcpy(o + 2 + j, &q, 1);
    }
}

void dq4_0_block(const uint8_t* o, float* y) {
    const float d = get_half(o);
    for (int j = 0; j < kQK / 2; ++j) {
        y[j] = static_cast<float>((o[2 + j] & 0x0F) - 8) * d;
        y[j + kQK / 2] = static_cast<float>((o[2 + j] >> 4) - 8) * d;
    }
}

uint32_t load_qh(const uint8_t* p) {
    uint32_t qh;
    std::memcpy(&qh, p, 4);
    return qh;
}

void dq5_0_block(const uint8_t* o, float* y) {
    const float d = get_half(o);
    const uint32_t qh = load_qh(o + 2);
    for (int j = 0; j < kQK / 2; ++j) {
        int h0 = static_cast<int>((qh >> j) & 1u) << 4, h1 = static_cast<int>((qh >> (j + kQK / 2)) & 1u) << 4;
        y[j] = static_cast<float>(((o[6 + j] & 0x0F) | h0) - 16) * d;
        y[j + kQK / 2] = static_cast<float>(((o[6 + j] >> 4) | h1) - 16) * d;
    }
}

void dq5_1_block(const uint8_t* o, float* y) {
    const float d = get_half(o), m = get_half(o + 2);
    const uint32_t qh = load_qh(o + 4);
    for (int j = 0; j < kQK / 2; ++j) {
        int h0 = static_cast<int>((qh >> j) & 1u) << 4, h1 = static_cast<int>((qh >> (j + kQK / 2)) & 1u) << 4;
        y[j] = static_cast<float>((o[8 + j] & 0x0F) | h0) * d + m;
        y[j + kQK / 2] = static_cast<float>((o[8 + j] >> 4) | h1) * d + m;
    }
}

void dq8_0_block(const uint8_t* o, float* y) {
    const float d = get_half(o);
    for (int j = 0; j < kQK; ++j) {
        int8_t q;
        std::memcpy(&q, o + 2 + j, 1);
        y[j] = static_cast<float>(q) * d;
    }
}

// ---------------------------------------------------------------- K-quant helpers

// Symmetric levels for n values in [-nmax, nmax-1] (stored + nmax in L) with the scale that
// minimises sum x^2 (x - scale l)^2 over 19 trial inverse scales (ggml make_qx_quants, rmse 1).
float symmetric_levels(int n, int nmax, const float* x, int8_t* L) {
    float max, amax;
    signed_absmax(x, n, max, amax);
    if (amax < kGroupMaxEps) {
        std::fill(L, L + n, int8_t{0});
        return 0.f;
    }
    auto level = [&](float iscale, int i) { return std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))); };
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = level(iscale, i);
        L[i] = static_cast<int8_t>(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = level(iscale, i);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + level(iscale, i));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Asymmetric levels 0..nmax with scale and min (x ~ scale l - the_min) minimising the weighted
// squared error over nstep+1 trial inverse scales (ggml make_qkx2_quants, use_mad false).
float asymmetric_levels(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                        float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        std::fill(L, L + n, uint8_t{0});
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = static_cast<uint8_t>(l);
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                std::copy(Laux, Laux + n, L);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// The 6-bit scale and min of sub-block j from Q4_K/Q5_K's 12 packed bytes: sub-blocks 0-3 in
// the low 6 bits of bytes j / j+4; 4-7 in the nibbles of bytes j+4 plus the top 2 bits of 0-7.
void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q4_K / Q5_K super-block: 8 asymmetric sub-blocks of 32 with levels 0..nmax; writes the fp16 d,
// dmin and 12 scale bytes at o, the final levels (requantized with the 6-bit scales) into L.
void kquant_scales(const float* x, int nmax, float rmin, int nstep, uint8_t* o, uint8_t* L) {
    float mins[8], scales[8], weights[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
        float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
        scales[j] = asymmetric_levels(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
    }
    uint8_t* sc = o + 4;
    std::memset(sc, 0, 12);
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
        uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
            sc[j] |= static_cast<uint8_t>((lm >> 4) << 6);
        }
    }
    put_half(o, max_scale / 63.f);
    put_half(o + 2, max_min / 63.f);
    const float d_all = get_half(o), dmin_all = get_half(o + 2);
    for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        scale_min_k4(j, sc, s, m);
        const float d = d_all * s;
        if (d == 0.f) continue;  // keeps the search's levels, as ggml does
        const float dm = dmin_all * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
        }
    }
}

void q4_k_block(const float* x, uint8_t* o) {
    uint8_t L[kQKK];
    kquant_scales(x, 15, -1.f, 20, o, L);
    uint8_t* q = o + 16;
    for (int j = 0; j < kQKK; j += 64) {  // 64 values per 32 bytes: low nibble first 32, high the next
        for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

void q5_k_block(const float* x, uint8_t* o) {
    uint8_t L[kQKK];
    kquant_scales(x, 31, -0.5f, 15, o, L);
    uint8_t* qh = o + 16;
    uint8_t* ql = o + 48;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQKK; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
            if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
            ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
        }
        m1 = static_cast<uint8_t>(m1 << 2);
        m2 = static_cast<uint8_t>(m2 << 2);
        ql += 32;
    }
}

void q6_k_block(const float* x, uint8_t* o) {
    int8_t L[kQKK];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        scales[ib] = symmetric_levels(16, 32, x + 16 * ib, L + 16 * ib);
        if (std::fabs(scales[ib]) > max_abs_scale) {
            max_abs_scale = std::fabs(scales[ib]);
            max_scale = scales[ib];
        }
    }
    uint8_t* ql = o;
    uint8_t* qh = o + 128;
    int8_t* sc = reinterpret_cast<int8_t*>(o + 192);
    if (max_abs_scale < kGroupMaxEps) {
        std::memset(o, 0, 210);
        return;
    }
    float iscale = -128.f / max_scale;
    put_half(o + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    const float d_all = get_half(o + 208);
    for (int j = 0; j < 16; ++j) {
        float d = d_all * sc[j];
        if (d == 0.f) continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = std::max(-32, std::min(31, nearest_int(x[16 * j + ii] / d)));
            L[16 * j + ii] = static_cast<int8_t>(l + 32);
        }
    }
    // 128 values per 64 ql bytes (nibbles: l, l+64 | l+32, l+96) and 32 qh bytes (2 bits each).
    for (int j = 0; j < kQKK; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const int a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
            ql[l] = static_cast<uint8_t>((a & 0xF) | ((c & 0xF) << 4));
            ql[l + 32] = static_cast<uint8_t>((b & 0xF) | ((e & 0xF) << 4));
            qh[l] = static_cast<uint8_t>((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

// Q4_K (qh null: 4-bit levels) and Q5_K (qh: the 5th bit of each level) dequantization:
// 64 values per 32 level bytes, low nibbles with sub-block 2c's scale/min, high with 2c+1's.
void dq_k_block(const uint8_t* o, const uint8_t* qh, const uint8_t* ql, float* y) {
    const float d = get_half(o), min = get_half(o + 2);
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQKK; j += 64, is += 2, ql += 32) {
        uint8_t s, m;
        scale_min_k4(is, o + 4, s, m);
        const float d1 = d * s, m1 = min * m;
        scale_min_k4(is + 1, o + 4, s, m);
        const float d2 = d * s, m2 = min * m;
        for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
        u1 = static_cast<uint8_t>(u1 << 2);
        u2 = static_cast<uint8_t>(u2 << 2);
    }
}
void dq4_k_block(const uint8_t* o, float* y) { dq_k_block(o, nullptr, o + 16, y); }
void dq5_k_block(const uint8_t* o, float* y) { dq_k_block(o, o + 16, o + 48, y); }

void dq6_k_block(const uint8_t* o, float* y) {
    const float d = get_half(o + 208);
    const uint8_t* ql = o;
    const uint8_t* qh = o + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(o + 192);
    for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; ++l) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
    }
}

struct BlockFormat {
    uint32_t type;
    int64_t values, bytes;
    void (*quantize)(const float*, uint8_t*);
    void (*dequantize)(const uint8_t*, float*);
};
const BlockFormat kFormats[] = {
    {GGML_Q4_0, 32, 18, q4_0_block, dq4_0_block},   {GGML_Q5_0, 32, 22, q5_0_block, dq5_0_block},
    {GGML_Q5_1, 32, 24, q5_1_block, dq5_1_block},   {GGML_Q8_0, 32, 34, q8_0_block, dq8_0_block},
    {GGML_Q4_K, 256, 144, q4_k_block, dq4_k_block}, {GGML_Q5_K, 256, 176, q5_k_block, dq5_k_block},
    {GGML_Q6_K, 256, 210, q6_k_block, dq6_k_block},
};

const BlockFormat* find_format(uint32_t t) {
    for (const auto& f : kFormats) if (f.type == t) return &f;
    return nullptr;
}

const BlockFormat& format_of(uint32_t t, int64_t n) {
    const BlockFormat* f = find_format(t);
    if (!f) throw InternalError(ErrorInfo{}.msg(log::cat("no block format for ggml type ", t)));
    if (n % f->values != 0) {
        throw InternalError(ErrorInfo{}.msg(log::cat(ggml_type_name(t), ": ", n, " values are not whole blocks of ", f->values)));
    }
    return *f;
}

}  // namespace

bool ggml_is_block_quant(uint32_t t) { return find_format(t) != nullptr; }

int64_t ggml_block_values(uint32_t t) {
    const BlockFormat* f = find_format(t);
    return f ? f->values : 1;
}

int64_t ggml_block_bytes(uint32_t t) {
    if (const BlockFormat* f = find_format(t)) return f->bytes;
    return t == GGML_F32 ? 4 : (t == GGML_F16 || t == GGML_BF16) ? 2 : 0;
}

void quantize_blocks(uint32_t t, const float* x, int64_t n, uint8_t* out) {
    const BlockFormat& f = format_of(t, n);
    for (int64_t b = 0; b < n / f.values; ++b) f.quantize(x + b * f.values, out + b * f.bytes);
}

void dequantize_blocks(uint32_t t, const uint8_t* in, int64_t n, float* out) {
    const BlockFormat& f = format_of(t, n);
    for (int64_t b = 0; b < n / f.values; ++b) f.dequantize(in + b * f.bytes, out + b * f.values);
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) { quantize_blocks(GGML_Q8_0, x, n, out); }
void dequantize_q8_0(const uint8_t* in, int64_t n, float* out) { dequantize_blocks(GGML_Q8_0, in, n, out); }

}  // namespace pdsd::exporter
