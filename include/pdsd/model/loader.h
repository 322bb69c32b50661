// Loading a Hugging Face Qwen2 folder (config.json, generation_config.json, model.safetensors
// or sharded model-0000i-of-0000N.safetensors + index) into a Qwen2ForCausalLM.
//
// The module is built directly on the target device/dtype with uninitialised parameters. On
// the CPU, a tensor stored in the model's dtype is not copied at all: the parameter becomes a
// view of the mmapped safetensors file (zero-copy load: no read of the weights at load time,
// pages come from the page cache on first use, and processes loading the same file share
// them). Every other tensor (another dtype, a CUDA device, LoadOptions::map_weights false) is
// copied in once (mmapped bytes -> converted dtype on the device); no second full copy of the
// model is made either way. Mapped parameters are copy-on-write: an in-place update (training)
// copies the touched pages privately and never changes the file; the mapping stays alive as
// long as any parameter views it. Every missing, unexpected or mis-shaped tensor is
// reported together in one ShapeError; unreadable files are IoError/FormatError.
#pragma once

#include "pdsd/core/hf_config.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/qwen2.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace pdsd::model {

struct LoadOptions {
    std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
    std::string dtype;           // "bf16" | "fp16" | "fp32"; empty: see resolve_dtype
    bool map_weights = true;     // CPU, stored dtype == model dtype: parameters view the file (no copy)
    // Weight-only quantization at load ("" | none | int8 | int4, model/quant.h; CPU only): the
    // weights quant::is_quantized_weight names are read as views of the mapped file in their
    // stored dtype whatever the compute dtype, quantized, and dropped, so no float copy of them
    // is ever made (peak memory: the quantized model + the page cache the kernel can reclaim).
    std::string quant;
};

// A model ready for inference (eval, no grad), with its configs.
struct LoadedModel {
    Qwen2Config config;
    GenerationConfig generation;  // generation_config.json (empty when absent)
    Qwen2ForCausalLM model{nullptr};
    c10::Device device = c10::kCPU;
    c10::ScalarType dtype = c10::kFloat;
    std::string path;
    int64_t quant_bytes = 0;  // bytes of the weights quantized at load (LoadOptions::quant); 0: none
};

// "cpu" / "cuda" / "cuda:1" -> device; UsageError when malformed, or when CUDA is requested
// but not available.
c10::Device parse_device(const std::string& name);
// The compute dtype LoadOptions resolves to on `device`. An explicit `dtype` wins. Empty:
// bf16 on CUDA, fp32 on the CPU. Policy prepared (switched off in loader.cpp until a bf16
// prefill slow path in qwen2.cpp is fixed, see there): on the CPU, bf16 when the checkpoint
// stores bf16 (`stored`, the dtype of model.embed_tokens.weight) and cpu_has_native_bf16(),
// so that the parameters map the file without a copy and oneDNN's bf16 matmul (AMX where
// present) runs prefill; fp32 otherwise (bf16 matmul without those instructions is emulated).
c10::ScalarType resolve_dtype(const std::string& dtype, const c10::Device& device,
                              std::optional<c10::ScalarType> stored = std::nullopt);
// AVX512_BF16 or AMX-BF16 (native bf16 matmuls) on this CPU.
bool cpu_has_native_bf16();

// Loads the tensors of `ck` into `model`'s parameters. Checks all names and shapes first;
// throws one ShapeError listing every problem. A tied model ignores a stored lm_head.weight
// (HF does too). With `map_weights`, each CPU parameter whose dtype equals the stored one (and
// whose bytes are aligned to the element size) becomes a copy-on-write view of `ck`'s mapping
// that keeps `ck` alive; the others get one converting copy (dtype/device). Returns how many
// were mapped.
// `as_stored`: parameters that become views of the file in the checkpoint's dtype even when the
// model's dtype differs (their placeholder's dtype is replaced; load-time quantization reads them).
size_t load_weights(Qwen2ForCausalLMImpl& model, const std::shared_ptr<Checkpoint>& ck, bool map_weights,
                    const std::function<bool(const std::string&)>& as_stored = {});

LoadedModel load_qwen2(const std::string& dir, const LoadOptions& options = {});

}  // namespace pdsd::model
