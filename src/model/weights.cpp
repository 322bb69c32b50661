#include "pdsd/model/weights.h"

#include "pdsd/core/error.h"

#include <ATen/ops/from_blob.h>

namespace pdsd::model {

c10::ScalarType to_scalar_type(DType dt) {
    switch (dt) {
        case DType::BOOL: return c10::kBool;
        case DType::U8: return c10::kByte;
        case DType::I8: return c10::kChar;
        case DType::I16: return c10::kShort;
        case DType::I32: return c10::kInt;
        case DType::I64: return c10::kLong;
        case DType::F16: return c10::kHalf;
        case DType::BF16: return c10::kBFloat16;
        case DType::F32: return c10::kFloat;
        case DType::F64: return c10::kDouble;
    }
    throw InternalError("unhandled safetensors dtype");
}

DType from_scalar_type(c10::ScalarType st) {
    switch (st) {
        case c10::kBool: return DType::BOOL;
        case c10::kByte: return DType::U8;
        case c10::kChar: return DType::I8;
        case c10::kShort: return DType::I16;
        case c10::kInt: return DType::I32;
        case c10::kLong: return DType::I64;
        case c10::kHalf: return DType::F16;
        case c10::kBFloat16: return DType::BF16;
        case c10::kFloat: return DType::F32;
        case c10::kDouble: return DType::F64;
        default:
            throw ShapeError(ErrorInfo{}.msg(std::string("cannot store dtype ") + c10::toString(st) + " in safetensors"));
    }
}

at::Tensor checkpoint_tensor(const Checkpoint& ck, const std::string& name) {
    const TensorInfo& info = ck.info(name);
    auto options = at::TensorOptions().dtype(to_scalar_type(info.dtype)).device(at::kCPU);
    // from_blob needs a mutable pointer; the mapping is read-only (PROT_READ), so a
    // write through this view would fault. Callers copy before modifying.
    void* data = const_cast<uint8_t*>(ck.data(name));
    return at::from_blob(data, info.shape, options);
}

TensorView tensor_view(const std::string& name, const at::Tensor& t, at::Tensor& keep_alive) {
    if (!t.device().is_cpu()) {
        throw InternalError("tensor_view: tensor '" + name + "' must be on the CPU before writing");
    }
    keep_alive = t.contiguous();
    TensorView v;
    v.name = name;
    v.dtype = from_scalar_type(keep_alive.scalar_type());
    v.shape = keep_alive.sizes().vec();
    v.data = keep_alive.data_ptr();
    v.nbytes = static_cast<uint64_t>(keep_alive.numel()) * keep_alive.element_size();
    return v;
}

c10::ScalarType parse_dtype_name(const std::string& name) {
    if (name == "bf16" || name == "bfloat16") return c10::kBFloat16;
    if (name == "fp16" || name == "float16" || name == "half") return c10::kHalf;
    if (name == "fp32" || name == "float32" || name == "float") return c10::kFloat;
    throw UsageError(ErrorInfo{}.at("dtype").expected("bf16, fp16 or fp32").found("'" + name + "'"));
}

}  // namespace pdsd::model
