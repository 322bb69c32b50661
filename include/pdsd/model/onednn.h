// oneDNN's pre-packed linear on the CPU (the ops torch.compile's CPU freezing pass emits),
// looked up once in the dispatcher. at::linear re-packs a bf16 weight into oneDNN's blocked
// layout on every call; for a batch-1 decode step that packing was ~80% of the time. Packing
// once at load and calling mkldnn::_linear_pointwise removes it.
//   pack(w [out, in])                     -> opaque packed weight (throws c10::Error if refused)
//   linear(x [T, in], packed, bias, attr) -> [T, out]; attr "none" | "gelu" (with `algorithm`)
//   linear_add(x, residual [T, out], ...) -> x W^T + b + residual, the add fused
// available() is false in a libtorch without oneDNN; callers then use at::linear.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace pdsd::model::onednn {

bool available();
at::Tensor pack(const at::Tensor& weight);
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias, const std::string& attr = "none",
                  const std::string& algorithm = "");
at::Tensor linear_add(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& packed, const at::Tensor& bias);

}  // namespace pdsd::model::onednn
