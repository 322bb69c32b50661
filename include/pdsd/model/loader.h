// Loading a Hugging Face Qwen2 folder (config.json, generation_config.json, model.safetensors
// or sharded model-0000i-of-0000N.safetensors + index) into a Qwen2ForCausalLM.
//
// The module is built directly on the target device/dtype with uninitialised parameters and
// each checkpoint tensor is copied in once (mmapped bytes -> converted dtype on the device);
// no second full copy of the model is made. Every missing, unexpected or mis-shaped tensor is
// reported together in one ShapeError; unreadable files are IoError/FormatError.
#pragma once

#include "pdsd/core/hf_config.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/qwen2.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace pdsd::model {

struct LoadOptions {
    std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
    std::string dtype;           // "bf16" | "fp16" | "fp32"; empty: fp32 on CPU (no fast bf16 matmul), bf16 on CUDA
};

// A model ready for inference (eval, no grad), with its configs.
struct LoadedModel {
    Qwen2Config config;
    GenerationConfig generation;  // generation_config.json (empty when absent)
    Qwen2ForCausalLM model{nullptr};
    c10::Device device = c10::kCPU;
    c10::ScalarType dtype = c10::kFloat;
    std::string path;
};

// "cpu" / "cuda" / "cuda:1" -> device; UsageError when malformed, or when CUDA is requested
// but not available.
c10::Device parse_device(const std::string& name);
// The compute dtype LoadOptions resolves to on `device`.
c10::ScalarType resolve_dtype(const std::string& dtype, const c10::Device& device);

// Copies the tensors of `ck` into `model`'s parameters (converting dtype/device). Checks all
// names and shapes first; throws one ShapeError listing every problem. A tied model ignores a
// stored lm_head.weight (HF does too).
void load_weights(Qwen2ForCausalLMImpl& model, const Checkpoint& ck);

LoadedModel load_qwen2(const std::string& dir, const LoadOptions& options = {});

}  // namespace pdsd::model
