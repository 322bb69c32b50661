// Bit-for-bit tensor equality for the golden checks of model/ (NF4, int8 rows): same shape,
// same dtype, same bytes (so -0 vs +0 and NaN payloads count).
#pragma once

#include <ATen/ATen.h>

namespace pdsd::test {

inline bool same_bits(const at::Tensor& a, const at::Tensor& b) {
    return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
           at::equal(a.contiguous().view(at::kByte), b.contiguous().view(at::kByte));
}

}  // namespace pdsd::test
