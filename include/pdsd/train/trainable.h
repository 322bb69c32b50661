// What a fine-tuning method trains and how it is saved: the one seam between the SFT recipe
// (train/trainer.h) and LLaMA-Factory's finetuning_type.
//
//   lora    LoRA matrices on the targeted projections (lora/inject.h); saved as a PEFT
//           adapter (adapter_model.safetensors + adapter_config.json).
//   freeze  the base weights of the selected decoder layers / sub-modules / extra modules,
//           everything else frozen (LF _setup_freeze_tuning);
//   full    every base weight.
//           freeze and full save an HF model folder (model.safetensors or shards + index,
//           config.json, generation_config.json, tokenizer files), as LF's save_pretrained
//           does: trained tensors as the optimizer holds them (fp32 master weights, bf16 with
//           pure_bf16 — LF's cast_trainable_params_to_fp32), frozen tensors byte for byte
//           as stored in the base checkpoint.
//
// Precision: on the CPU the model computes in fp32 and the trained tensors are the model's
// own parameters. With bf16 compute (CUDA) the model keeps bf16 weights; freeze/full then
// hold fp32 master copies (gradients_to_master / master_to_model around the AdamW step),
// unless pure_bf16, where the bf16 weights are updated in place.
#pragma once

#include "pdsd/core/hf_config.h"
#include "pdsd/core/lf_args.h"
#include "pdsd/model/qwen2.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pdsd::train {

class Trainable {
public:
    virtual ~Trainable() = default;

    // Tensors AdamW updates, in a fixed order, and their names: the keys of the checkpoint's
    // optimizer.safetensors ("<name>.exp_avg"). PEFT names for lora, HF names otherwise.
    const std::vector<at::Tensor>& parameters() const { return params_; }
    const std::vector<std::string>& parameter_names() const { return names_; }
    int64_t num_parameters() const;

    // For each decoder layer, the tensors its forward reads that require grad: the inputs of
    // that layer's gradient-checkpoint node (train/checkpointing.h), so their gradients flow.
    virtual std::vector<std::vector<at::Tensor>> layer_parameters() const = 0;
    // The forward draws random numbers (LoRA dropout): checkpointing replays the generator.
    virtual bool uses_rng() const { return false; }

    // Mixed precision: after the step's backward, put the model weights' gradients onto
    // parameters(); after the optimizer step, copy parameters() back into the model.
    virtual void gradients_to_master() {}
    virtual void master_to_model() {}

    // Writes the result into the existing folder `dir` (a checkpoint or output_dir).
    virtual void save(const std::string& dir) const = 0;
    // Restores parameters() (and the model) from a folder save() wrote.
    virtual void load(const std::string& dir) = 0;
    // output_dir already holds a finished result of this method.
    virtual bool output_exists(const std::string& dir) const = 0;
    // "adapter" or "model", for messages.
    virtual std::string output_kind() const = 0;

protected:
    std::vector<at::Tensor> params_;
    std::vector<std::string> names_;
};

// The method's trainable set on a loaded model (fresh: LoRA initialised from the global
// generator, in PEFT's order). `compute` is the model's dtype; `base_dir` the base model
// folder (its frozen tensors and side files are copied into saved folders).
std::unique_ptr<Trainable> make_trainable(const LfArgs& args, model::Qwen2ForCausalLMImpl& model, const std::string& base_dir,
                                          c10::ScalarType compute, const c10::Device& device);

// Parameter counts for the plan, without loading weights (LoRA from the Qwen2 shapes,
// freeze/full from the checkpoint's header). Throws ConfigError for bad freeze keys.
struct ParamCount {
    int64_t trainable = 0, total = 0;
};
ParamCount count_parameters(const LfArgs& args, const Qwen2Config& config, const std::string& base_dir);
// Weights of the seven decoder-layer projections (what QLoRA stores in 4 or 8 bits), biases excluded.
int64_t projection_params(const Qwen2Config& config);

// freeze/full: whether the HF parameter `name` trains (full: always). Validates the freeze
// keys against the model's module names (ConfigError naming the key, the valid names).
std::function<bool(const std::string&)> weight_selector(const LfFinetuningArgs& f, const Qwen2Config& config,
                                                        const std::vector<std::string>& parameter_names);

}  // namespace pdsd::train
