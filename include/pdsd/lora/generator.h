// Loading a model for inference with an optional LoRA adapter applied at load time,
// without merging (shared by `pdsd chat --adapter` and `pdsd serve --adapter`).
//
//   model::Generator g = lora::load_generator("Qwen2.5-0.5B-Instruct", "cpu", "", "saves/lora/sft");
//
// The adapter's LoRA layers are attached to the base model's projections (lora/inject.h) and
// its A/B matrices loaded (float32, on the model's device): y = W x + scale * B (A x).
// Greedy output equals that of `pdsd export`'s merged model up to the rounding of the merged
// weights. Torch-free header.
#pragma once

#include "pdsd/model/generate.h"

#include <string>

namespace pdsd::lora {

// `adapter_dir` empty: the plain model (model::Generator::load). Otherwise a PEFT adapter
// folder (adapter_config.json + adapter_model.safetensors); ConfigError/ShapeError when it
// does not fit the model (other modules, ranks, unsupported PEFT options).
// `quant`: weight-only quantization at load (model::LoadOptions::quant), before the adapter
// is attached (LoRA runs in fp32 beside the quantized base projections).
model::Generator load_generator(const std::string& model_dir, const std::string& device, const std::string& dtype,
                                const std::string& adapter_dir = "", const std::string& quant = "");

}  // namespace pdsd::lora
