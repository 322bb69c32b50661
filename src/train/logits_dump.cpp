// `pdsd model logits`: base + LoRA logits for PEFT oracle checks; see logits_dump.h.
#include "pdsd/train/logits_dump.h"

#include "pdsd/core/error.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/lora/inject.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/qlora_base.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace pdsd::train {

void dump_logits(const LogitsDumpOptions& o) {
    if (o.rows.empty()) throw UsageError(ErrorInfo{}.at("--ids").msg("needs at least one sequence"));
    size_t T = 0;
    for (const auto& r : o.rows) T = std::max(T, r.size());
    if (T == 0) throw UsageError(ErrorInfo{}.at("--ids").msg("sequences are empty"));
    const auto base = model::qlora::parse(o.quantization_bit, o.quantization_type, o.double_quantization);  // checked before loading
    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    model::LoadedModel lm = model::load_qwen2(o.model_dir, lo);
    auto& net = *lm.model;
    model::qlora::quantize_base(net, base);
    if (!o.adapter_dir.empty()) {
        lora::Adapter ad = lora::load_adapter(o.adapter_dir);
        const auto& c = ad.config;
        lora::LoraHyper hyper{c.r, c.lora_alpha, c.lora_dropout, c.use_rslora};
        auto att = lora::attach_lora(net, hyper, lora::resolve_lora_targets(c.target_modules), at::TensorOptions().dtype(at::kFloat));
        att.load(ad);
    }
    net.eval();
    const int64_t B = static_cast<int64_t>(o.rows.size()), V = net.config().vocab_size;
    at::Tensor ids = at::zeros({B, static_cast<int64_t>(T)}, at::kLong), mask = at::zeros_like(ids);
    for (int64_t b = 0; b < B; ++b) {
        for (size_t t = 0; t < o.rows[b].size(); ++t) {
            const int64_t id = o.rows[b][t];
            if (id < 0 || id >= V) {
                throw ShapeError(ErrorInfo{}.at("--ids row " + std::to_string(b)).expected("ids in [0, " + std::to_string(V) + ")")
                                     .found(std::to_string(id)));
            }
            ids[b][static_cast<int64_t>(t)] = id;
            mask[b][static_cast<int64_t>(t)] = 1;
        }
    }
    at::NoGradGuard ng;
    at::Tensor logits = net.forward(ids, mask).logits.contiguous();  // (B, T, V) fp32
    std::vector<at::Tensor> keep(3);
    std::vector<TensorView> views{model::tensor_view("logits", logits, keep[0]), model::tensor_view("input_ids", ids, keep[1]),
                                  model::tensor_view("attention_mask", mask, keep[2])};
    write_safetensors(o.out_path, views, {{"format", "pt"}});
}

}  // namespace pdsd::train
