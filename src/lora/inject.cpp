// LoRA attachment to Qwen2 projections; see inject.h.
#include "pdsd/lora/inject.h"

#include "pdsd/core/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

namespace pdsd::lora {

namespace {
const std::vector<std::string> kAllTargets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
}
}  // namespace

std::vector<std::string> resolve_lora_targets(const std::vector<std::string>& lora_target) {
    std::vector<std::string> wanted;
    for (const auto& t : lora_target) {
        if (t == "all") return kAllTargets;
        if (std::find(kAllTargets.begin(), kAllTargets.end(), t) == kAllTargets.end()) {
            throw ConfigError(ErrorInfo{}.at("lora_target").expected("all or some of " + join(kAllTargets))
                                  .found("'" + t + "'").hint("Qwen2 has no other Linear layers besides lm_head, which LF never targets"));
        }
        wanted.push_back(t);
    }
    if (wanted.empty()) {
        throw ConfigError(ErrorInfo{}.at("lora_target").expected("at least one module name").found("an empty list"));
    }
    std::vector<std::string> ordered;  // module order, duplicates removed
    for (const auto& t : kAllTargets) {
        if (std::find(wanted.begin(), wanted.end(), t) != wanted.end()) ordered.push_back(t);
    }
    return ordered;
}

LoraAttachment attach_lora(model::Qwen2ForCausalLMImpl& m, const LoraHyper& hyper, const std::vector<std::string>& targets,
                           at::TensorOptions options) {
    for (auto& p : m.parameters()) p.set_requires_grad(false);
    LoraAttachment att;
    att.hyper = hyper;
    att.target_modules = targets;
    auto wants = [&](const char* n) { return std::find(targets.begin(), targets.end(), n) != targets.end(); };
    for (size_t i = 0; i < m.model->layers.size(); ++i) {
        auto& layer = m.model->layers[i];
        const std::string base = "model.layers." + std::to_string(i) + ".";
        std::vector<std::pair<std::string, model::Proj*>> projs = {
            {"q_proj", &layer->self_attn->q_proj},  {"k_proj", &layer->self_attn->k_proj},
            {"v_proj", &layer->self_attn->v_proj},  {"o_proj", &layer->self_attn->o_proj},
            {"gate_proj", &layer->mlp->gate_proj}, {"up_proj", &layer->mlp->up_proj},
            {"down_proj", &layer->mlp->down_proj}};
        for (auto& [name, proj] : projs) {
            if (!wants(name.c_str())) continue;
            model::ProjImpl& p = **proj;
            if (p.adapter) {
                throw UsageError(ErrorInfo{}.at(base + name).msg("already has an adapter attached"));
            }
            LoraLinear l(p.weight.size(1), p.weight.size(0), hyper, options);
            p.register_module("lora_A", l->lora_A);
            p.register_module("lora_B", l->lora_B);
            // The hook owns the layer, so the model keeps working after the attachment is gone.
            p.adapter = [l](const at::Tensor& x, const at::Tensor& y) mutable { return l->apply(x, y); };
            const bool attn = name == "q_proj" || name == "k_proj" || name == "v_proj" || name == "o_proj";
            att.modules.push_back(base + (attn ? "self_attn." : "mlp.") + name);
            att.layers.push_back(l);
        }
    }
    return att;
}

std::vector<at::Tensor> LoraAttachment::parameters() const {
    std::vector<at::Tensor> out;
    for (const auto& l : layers) {
        out.push_back(l->lora_A->weight);
        out.push_back(l->lora_B->weight);
    }
    return out;
}

std::vector<std::string> LoraAttachment::parameter_names() const {
    std::vector<std::string> out;
    for (const auto& m : modules) {
        out.push_back(peft_tensor_name(m, 'A'));
        out.push_back(peft_tensor_name(m, 'B'));
    }
    return out;
}

int64_t LoraAttachment::num_parameters() const {
    int64_t n = 0;
    for (const auto& t : parameters()) n += t.numel();
    return n;
}

Adapter LoraAttachment::to_adapter(const std::string& base_model_name_or_path) const {
    Adapter a;
    a.config.r = hyper.r;
    a.config.lora_alpha = hyper.alpha;
    a.config.lora_dropout = hyper.dropout;
    a.config.use_rslora = hyper.use_rslora;
    a.config.target_modules = target_modules;
    a.config.base_model_name_or_path = base_model_name_or_path;
    for (size_t i = 0; i < layers.size(); ++i) {
        LoraModule lm;
        lm.name = modules[i];
        lm.A = layers[i]->lora_A->weight.detach().to(at::kCPU, at::kFloat).clone();
        lm.B = layers[i]->lora_B->weight.detach().to(at::kCPU, at::kFloat).clone();
        lm.scale = hyper.scaling();
        a.modules.push_back(std::move(lm));
    }
    std::sort(a.modules.begin(), a.modules.end(), [](const LoraModule& x, const LoraModule& y) { return x.name < y.name; });
    return a;
}

void LoraAttachment::load(const Adapter& adapter) {
    std::string problems;
    for (size_t i = 0; i < modules.size(); ++i) {
        const LoraModule* lm = adapter.find(modules[i]);
        if (!lm) {
            problems += "\n  missing in adapter: " + modules[i];
            continue;
        }
        if (!lm->A.sizes().equals(layers[i]->lora_A->weight.sizes()) || !lm->B.sizes().equals(layers[i]->lora_B->weight.sizes())) {
            problems += "\n  " + modules[i] + ": shapes differ (rank " + std::to_string(lm->A.size(0)) + " vs " +
                        std::to_string(hyper.r) + ")";
        }
    }
    for (const auto& lm : adapter.modules) {
        if (std::find(modules.begin(), modules.end(), lm.name) == modules.end()) problems += "\n  not attached: " + lm.name;
    }
    if (!problems.empty()) {
        throw ShapeError(ErrorInfo{adapter.path}.msg("adapter does not fit the attached LoRA layers" + problems)
                             .hint("check lora_target / lora_rank against the adapter's adapter_config.json"));
    }
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < modules.size(); ++i) {
        const LoraModule* lm = adapter.find(modules[i]);
        layers[i]->lora_A->weight.copy_(lm->A);
        layers[i]->lora_B->weight.copy_(lm->B);
        layers[i]->hyper.alpha = adapter.config.alpha_for(modules[i]);
        layers[i]->hyper.r = adapter.config.rank_for(modules[i]);
        layers[i]->hyper.dropout = adapter.config.lora_dropout;
        layers[i]->hyper.use_rslora = adapter.config.use_rslora;
    }
}

}  // namespace pdsd::lora
