// Model + optional unmerged LoRA adapter for inference; see generator.h.
#include "pdsd/lora/generator.h"

#include "pdsd/core/log.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/lora/inject.h"
#include "pdsd/model/loader.h"

#include <ATen/core/Tensor.h>

#include <memory>

namespace pdsd::lora {

model::Generator load_generator(const std::string& model_dir, const std::string& device, const std::string& dtype,
                                const std::string& adapter_dir, const std::string& quant) {
    if (adapter_dir.empty()) return model::Generator::load(model_dir, device, dtype, quant);
    // Read the adapter first: a bad adapter fails before the (slow) model load.
    Adapter adapter = load_adapter(adapter_dir);
    model::LoadOptions lo;
    lo.device = device;
    lo.dtype = dtype;
    lo.quant = quant;
    auto lm = std::make_shared<model::LoadedModel>(model::load_qwen2(model_dir, lo));
    const AdapterConfig& c = adapter.config;
    LoraHyper hyper{c.r, c.lora_alpha, c.lora_dropout, c.use_rslora};
    // LoRA weights in float32 on the model's device (as LLaMA-Factory upcasts them).
    LoraAttachment att = attach_lora(*lm->model, hyper, resolve_lora_targets(c.target_modules),
                                     at::TensorOptions().dtype(at::kFloat).device(lm->device));
    att.load(adapter);
    lm->model->eval();  // the new LoRA children were created in training mode (dropout)
    log::info("lora", log::cat("adapter ", adapter_dir, " applied (unmerged) to ", att.modules.size(), " modules"));
    return model::Generator(std::move(lm));
}

}  // namespace pdsd::lora
