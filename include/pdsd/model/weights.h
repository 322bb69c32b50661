// Bridge between safetensors (core, torch-free) and libtorch tensors.
//
// checkpoint_tensor() returns a zero-copy view into the mmapped file: it stays valid
// only while the Checkpoint lives, and must not be written to (clone() or .to() first;
// model loading converts dtype/device once, which copies).
#pragma once

#include "pdsd/core/safetensors.h"

#include <ATen/core/Tensor.h>

#include <string>

namespace pdsd::model {

c10::ScalarType to_scalar_type(DType dt);
DType from_scalar_type(c10::ScalarType st);   // throws ShapeError for unsupported types

// Zero-copy CPU view of one tensor of the checkpoint, with its stored dtype and shape.
at::Tensor checkpoint_tensor(const Checkpoint& ck, const std::string& name);

// A TensorView over a CPU tensor's bytes (made contiguous into `keep_alive` if needed).
TensorView tensor_view(const std::string& name, const at::Tensor& t, at::Tensor& keep_alive);

// "bf16" | "bfloat16" | "fp16" | "float16" | "half" | "fp32" | "float32" | "float" -> dtype.
c10::ScalarType parse_dtype_name(const std::string& name);

}  // namespace pdsd::model
