#include "pdsd/model/int8_rows.h"

#include "pdsd/core/error.h"

#include <ATen/ATen.h>

#include <string>

namespace pdsd::model::int8_rows {

Int8Weight quantize(const at::Tensor& w) {
    if (w.dim() != 2) throw ShapeError(ErrorInfo{}.msg("int8_rows::quantize takes a 2-D weight").found(std::to_string(w.dim()) + "-D"));
    const at::Tensor h = w.to(at::kHalf);                               // (N, K), as Int8Params._quantize
    Int8Weight q;
    q.scb = std::get<0>(h.abs().max(1)).to(at::kFloat);                  // (N)
    const at::Tensor scale = at::reciprocal(q.scb) * 127.0;              // (N) fp32; inf for a zero row
    const at::Tensor v = at::round(h * scale.unsqueeze(1));              // fp32 (fp16 x fp32), half to even
    q.cb = at::nan_to_num(v, 0.0).to(at::kChar).contiguous();           // a zero row: 0 * inf -> 0, as bnb's kernels give
    return q;
}

at::Tensor dequantize(const Int8Weight& w, c10::ScalarType dtype) {
    const at::Tensor scale = w.scb * (1.0 / 127.0);                      // (N) fp32
    return (w.cb.to(at::kFloat) * scale.unsqueeze(1)).to(dtype);          // (N, K)
}

}  // namespace pdsd::model::int8_rows
