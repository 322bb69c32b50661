#include "pdsd/model/nf4.h"

#include "pdsd/core/error.h"
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace pdsd::model::nf4 {

namespace {

constexpr int64_t kAbsmaxBlock = 256;  // double quantization: absmaxes per second-level block

// bitsandbytes' tables (functional.get_4bit_type), fp32 values in index order.
const std::vector<float> kNf4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};
// FP4 (1 sign, 2 exponent, 1 mantissa bit), normalised by its largest magnitude (6 -> 1);
// index 8 (negative zero) holds +0 in bitsandbytes, so dequantized zeros are +0 either way.
const std::vector<float> kFp4 = {
    0.0f, 0.0052083334885537624f, 0.6666666865348816f, 1.0f, 0.3333333432674408f, 0.5f,
    0.1666666716337204f, 0.25f, 0.0f, -0.0052083334885537624f, -0.6666666865348816f, -1.0f,
    -0.3333333432674408f, -0.5f, -0.1666666716337204f, -0.25f};

// Scaled values in [-1, 1] -> the index of the ascending `sorted_code` value whose midpoint
// interval holds each (a tie goes to the lower one), int32.
at::Tensor nearest(const at::Tensor& scaled, const at::Tensor& sorted_code) {
    auto bounds = (sorted_code.slice(0, 0, -1) + sorted_code.slice(0, 1)) / 2;
    return at::bucketize(scaled, bounds, /*out_int32=*/true);
}

// Flat fp32 values -> (index into the ascending `sorted_code` per value, absmax per block).
// Each value is divided by its block's absmax (a reciprocal multiply in full blocks, a division
// in the short last one, as bitsandbytes does; clamped to [-1, 1]) and takes the nearest code.
std::pair<at::Tensor, at::Tensor> block_quantize(const at::Tensor& flat, const at::Tensor& sorted_code, int64_t blocksize) {
    const int64_t n = flat.numel(), rem = n % blocksize, full = n - rem;
    std::vector<at::Tensor> absmax, scaled;
    if (full > 0) {
        auto blocks = flat.slice(0, 0, full).view({-1, blocksize});
        auto am = std::get<0>(blocks.abs().max(-1));  // (blocks)
        absmax.push_back(am);
        scaled.push_back(at::clamp(blocks * at::reciprocal(am.clamp_min(1e-38)).unsqueeze(1), -1, 1).reshape({-1}));
    }
    if (rem > 0) {
        auto tail = flat.slice(0, full, n);
        auto am = tail.abs().max().clamp_min(1e-38);
        absmax.push_back(am.unsqueeze(0));
        scaled.push_back(at::clamp(tail / am, -1, 1));
    }
    return {nearest(at::cat(scaled), sorted_code), at::cat(absmax)};
}

// Flat code values (fp32) times their block's scale.
at::Tensor scale_blocks(const at::Tensor& values, const at::Tensor& scale, int64_t blocksize) {
    const int64_t n = values.numel(), rem = n % blocksize, full = n - rem;
    std::vector<at::Tensor> parts;
    if (full > 0) parts.push_back((values.slice(0, 0, full).view({-1, blocksize}) * scale.slice(0, 0, full / blocksize).unsqueeze(1)).reshape({-1}));
    if (rem > 0) parts.push_back(values.slice(0, full, n) * scale[full / blocksize]);
    return at::cat(parts);
}

}  // namespace

Kind parse_kind(const std::string& name) {
    if (name == "nf4") return Kind::nf4;
    if (name == "fp4") return Kind::fp4;
    throw ConfigError(ErrorInfo{}.at("quantization_type").expected("nf4 | fp4").found("'" + name + "'")
                          .hint("LLaMA-Factory's default is nf4"));
}

const char* kind_name(Kind k) { return k == Kind::nf4 ? "nf4" : "fp4"; }

int64_t Nf4Weight::nbytes() const {
    int64_t b = packed.numel();
    if (double_quant()) return b + qabsmax.numel() + absmax2.numel() * 4 + 4;
    return b + absmax.numel() * 4;
}

at::Tensor code(Kind k) {
    const auto& v = k == Kind::nf4 ? kNf4 : kFp4;
    return at::tensor(at::ArrayRef<float>(v), at::kFloat);
}

at::Tensor dynamic_map() {
    // Signed, 7 exponent bits: for e = 0..6, 2^e fraction steps of [0.1, 1] (their midpoints)
    // scaled by 10^(e-6), both signs; then 0 and 1. Computed in fp32 as bitsandbytes does.
    std::vector<at::Tensor> parts;
    for (int e = 0; e < 7; ++e) {
        auto bounds = at::linspace(0.1, 1.0, (int64_t{1} << e) + 1, at::kFloat);
        auto means = (bounds.slice(0, 0, -1) + bounds.slice(0, 1)) / 2.0;
        const double scale = std::pow(10.0, e - 6);
        parts.push_back(means * scale);
        parts.push_back(means * -scale);
    }
    parts.push_back(at::zeros({1}, at::kFloat));
    parts.push_back(at::ones({1}, at::kFloat));
    return std::get<0>(at::cat(parts).sort());
}

Nf4Weight quantize(const at::Tensor& w, Kind kind, bool double_quant, int64_t blocksize) {
    if (w.dim() != 2) throw ShapeError(ErrorInfo{}.msg("nf4::quantize takes a 2-D weight").found(std::to_string(w.dim()) + "-D"));
    const auto dev = w.device();
    Nf4Weight q;
    q.kind = kind;
    q.rows = w.size(0);
    q.cols = w.size(1);
    q.blocksize = blocksize;
    auto cd = code(kind).to(dev);
    auto order = at::argsort(cd, /*stable=*/true, 0, false);  // NF4: the identity
    const at::Tensor sorted = cd.index_select(0, order);
    auto [idx, absmax] = block_quantize(w.reshape({-1}).to(at::kFloat), sorted, blocksize);
    // An odd count: the last byte's low nibble is the index of a scaled 0, as bitsandbytes pads.
    if (idx.numel() % 2) idx = at::cat({idx, nearest(at::zeros({1}, sorted.options()), sorted)});
    auto ids = order.index_select(0, idx.to(at::kLong)).to(at::kByte);
    auto pairs = ids.view({-1, 2});
    q.packed = at::bitwise_or(at::bitwise_left_shift(pairs.select(1, 0), 4), pairs.select(1, 1)).contiguous();
    if (!double_quant) {
        q.absmax = absmax;
        return q;
    }
    const auto offset = absmax.mean();
    q.offset = offset.item<float>();
    auto [qa, absmax2] = block_quantize(absmax - offset, dynamic_map().to(dev), kAbsmaxBlock);
    q.qabsmax = qa.to(at::kByte);
    q.absmax2 = absmax2;
    return q;
}

at::Tensor block_absmax(const Nf4Weight& w) {
    if (!w.double_quant()) return w.absmax;
    auto values = dynamic_map().to(w.qabsmax.device()).index_select(0, w.qabsmax.to(at::kLong));
    return scale_blocks(values, w.absmax2, kAbsmaxBlock) + w.offset;
}

at::Tensor dequantize(const Nf4Weight& w, c10::ScalarType dtype) {
    const int64_t n = w.rows * w.cols;
    auto hi = at::bitwise_right_shift(w.packed, 4), lo = at::bitwise_and(w.packed, 15);
    auto ids = at::stack({hi, lo}, 1).reshape({-1}).slice(0, 0, n).to(at::kLong);
    auto values = code(w.kind).to(w.packed.device()).index_select(0, ids);
    return scale_blocks(values, block_absmax(w), w.blocksize).to(dtype).view({w.rows, w.cols});
}

}  // namespace pdsd::model::nf4
