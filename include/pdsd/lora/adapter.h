// PEFT LoRA adapter folders: read them into typed tensors, and write them back in the
// exact layout PEFT saves (so `PeftModel.from_pretrained`, LLaMA-Factory and Xinference
// `--lora-modules` load what pdsd writes, and pdsd loads what they write).
//
// On disk (PEFT `save_pretrained`):
//   adapter_config.json          r, lora_alpha, lora_dropout, target_modules, use_rslora, ...
//   adapter_model.safetensors    base_model.model.<module>.lora_A.weight  [r, in]
//                                base_model.model.<module>.lora_B.weight  [out, r]
// where <module> is the HF module name, e.g. "model.layers.0.self_attn.q_proj", whose base
// weight is "<module>.weight" [out, in]. PEFT's in-memory names carry ".default"
// (".lora_A.default.weight"); both spellings are read, the saved spelling is written.
//
// The LoRA update of a Linear layer: y = W x + scale * B (A x), i.e. W_merged = W + scale * B A,
// scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
//
// Supported subset (everything else is refused with a ConfigError that says why):
//   target_modules as a list of names (a string is a PEFT regex: refused), rank_pattern /
//   alpha_pattern keyed by module-name suffixes (regex keys refused), fan_in_fan_out.
//   Refused: modules_to_save (extra full weights), use_dora, bias != "none",
//   lora_embedding tensors, other adapter names than "default".
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <map>
#include <string>
#include <vector>

namespace pdsd::lora {

// adapter_config.json fields that affect the weights, plus the bookkeeping keys pdsd writes.
struct AdapterConfig {
    int64_t r = 8;
    double lora_alpha = 16;
    double lora_dropout = 0.0;
    std::vector<std::string> target_modules;      // module-name suffixes: "q_proj", "v_proj"
    bool use_rslora = false;
    bool fan_in_fan_out = false;                  // true: base weights stored [in, out] (GPT-2 Conv1D)
    std::map<std::string, int64_t> rank_pattern;  // module suffix -> r
    std::map<std::string, double> alpha_pattern;  // module suffix -> lora_alpha
    std::string base_model_name_or_path;
    std::string task_type = "CAUSAL_LM";
    std::string peft_version;                     // as read; written as "pdsd <version>" when empty

    // Rank and alpha for one module (patterns matched as "module == key" or "module ends with .key").
    int64_t rank_for(const std::string& module) const;
    double alpha_for(const std::string& module) const;
    // alpha / r, or alpha / sqrt(r) with use_rslora, for `module`.
    double scale_for(const std::string& module) const;
};

// One adapted Linear layer.
struct LoraModule {
    std::string name;   // HF module name: "model.layers.0.self_attn.q_proj"
    at::Tensor A;       // [r, in]   lora_A.weight (float32, CPU, owned: not a view of a file)
    at::Tensor B;       // [out, r]  lora_B.weight
    double scale = 1;   // alpha / r (or / sqrt(r))

    std::string base_weight() const { return name + ".weight"; }
    // scale * B A as float32 [out, in] (transposed to [in, out] when fan_in_fan_out).
    at::Tensor delta(bool fan_in_fan_out = false) const;
};

struct Adapter {
    std::string path;                 // folder it was read from ("" when built in memory)
    AdapterConfig config;
    std::vector<LoraModule> modules;  // sorted by name

    const LoraModule* find(const std::string& module) const;  // nullptr when absent
    bool all_B_zero() const;          // true: the adapter changes nothing (freshly initialised)
};

// PEFT's saved tensor name: "base_model.model.<module>.lora_A.weight" (which = 'A' or 'B').
std::string peft_tensor_name(const std::string& module, char which);

// Parses adapter_config.json. Throws ConfigError naming the key for what pdsd refuses
// (modules_to_save, use_dora, regex target_modules, bias, non-LORA peft_type, ...).
AdapterConfig parse_adapter_config(const nlohmann::json& j, const std::string& source);
AdapterConfig read_adapter_config(const std::string& path);

// Reads an adapter folder (adapter_config.json + adapter_model.safetensors). Tensors are
// converted to float32 and copied out of the file. Throws ConfigError / FormatError /
// ShapeError naming the file and tensor (unpaired A/B, rank mismatch, unknown tensor).
Adapter load_adapter(const std::string& dir);

// adapter_config.json as PEFT writes it (every key PEFT 0.21 writes for a plain LoRA).
nlohmann::json adapter_config_json(const AdapterConfig& config);

// Writes `adapter` into `dir` (created if missing): adapter_model.safetensors (float32
// unless `dtype` says otherwise, PEFT names without ".default", metadata format=pt) and
// adapter_config.json, each atomically. `target_modules` empty -> derived from the modules.
void save_adapter(const std::string& dir, const Adapter& adapter, c10::ScalarType dtype = c10::kFloat);

}  // namespace pdsd::lora
