// Attaching trainable LoRA layers to a Qwen2ForCausalLM (LLaMA-Factory finetuning_type lora).
//
// Each targeted projection (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
// "all" = every one of them, like LF's find_all_linear_modules, which skips lm_head) gets a
// LoraLinear registered as its "lora_A" / "lora_B" children and plugged into the projection's
// adapter hook. Layers are created in module order (layer 0 q,k,v,o,gate,up,down, layer 1,
// ...) as PEFT does, so the initialisation consumes the generator in the same order.
// Every base parameter is frozen (requires_grad false); only the LoRA matrices train.
//
// Trainable parameters: r * (in + out) per targeted projection. Qwen2.5-0.5B, q_proj + v_proj,
// r = 8: 24 layers * (8*(896+896) + 8*(896+128)) = 540,672.
#pragma once

#include "pdsd/lora/adapter.h"
#include "pdsd/lora/lora_linear.h"
#include "pdsd/model/qwen2.h"

#include <string>
#include <vector>

namespace pdsd::lora {

// The projection names lora_target selects, in module order. "all" (alone or in the list)
// = all seven. Unknown names throw ConfigError naming lora_target, with the valid names.
std::vector<std::string> resolve_lora_targets(const std::vector<std::string>& lora_target);

struct LoraAttachment {
    LoraHyper hyper;
    std::vector<std::string> target_modules;  // suffixes, e.g. {"q_proj", "v_proj"}
    std::vector<std::string> modules;         // HF module names, model order: "model.layers.0.self_attn.q_proj"
    std::vector<LoraLinear> layers;           // same order

    // Trainable tensors in a fixed order (per module: A, then B) and their PEFT saved names
    // ("base_model.model.<module>.lora_A.weight").
    std::vector<at::Tensor> parameters() const;
    std::vector<std::string> parameter_names() const;
    int64_t num_parameters() const;

    // Snapshot as an adapter (float32 CPU copies) for lora::save_adapter.
    Adapter to_adapter(const std::string& base_model_name_or_path) const;
    // Copy an adapter's A/B into the attached layers. The module set and ranks must match
    // exactly (ShapeError listing the differences); scale and dropout come from `adapter`.
    void load(const Adapter& adapter);
};

// Attach LoRA to `targets` (resolved names) of every decoder layer and freeze the base.
// `options`: dtype/device of the LoRA weights (float32 on the model's device, as LF upcasts).
LoraAttachment attach_lora(model::Qwen2ForCausalLMImpl& model, const LoraHyper& hyper,
                           const std::vector<std::string>& targets, at::TensorOptions options);

}  // namespace pdsd::lora
