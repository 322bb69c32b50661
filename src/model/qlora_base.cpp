#include "pdsd/model/qlora_base.h"

#include "pdsd/core/error.h"
#include "pdsd/model/int8_rows.h"
#include "pdsd/model/qwen2.h"

#include "layer_projections.h"

#include <ATen/ATen.h>

namespace pdsd::model::qlora {

std::string BaseQuant::describe() const {
    if (bits == 8) return "8-bit int8 rows";
    if (bits == 4) return std::string("4-bit ") + nf4::kind_name(kind) + (double_quant ? ", double quantization" : "");
    return "";
}

double BaseQuant::bytes_per_weight(int64_t in_features) const {
    if (bits == 8) return 1.0 + 4.0 / static_cast<double>(in_features);  // CB + one fp32 SCB a row
    if (bits == 4) return (double_quant ? 4.0 + 8.0 / 64 + 32.0 / (64 * 256) : 4.0 + 32.0 / 64) / 8;  // nf4.h
    return 0.0;
}

BaseQuant parse(int64_t quantization_bit, const std::string& quantization_type, bool double_quantization) {
    BaseQuant q;
    q.bits = quantization_bit;
    if (quantization_bit == 0 || quantization_bit == 8) return q;
    if (quantization_bit != 4) {
        throw ConfigError(ErrorInfo{}.at("quantization_bit").expected("4 | 8").found(std::to_string(quantization_bit))
                              .hint("bitsandbytes QLoRA stores the base in 4 bits (NF4/FP4) or 8 bits (LLM.int8's int8 rows)"));
    }
    q.kind = nf4::parse_kind(quantization_type);  // ConfigError naming quantization_type
    q.double_quant = double_quantization;
    return q;
}

int64_t quantize_base(Qwen2ForCausalLMImpl& model, const BaseQuant& q, int64_t* float_bytes) {
    if (q.bits == 0) return 0;
    at::NoGradGuard no_grad;
    int64_t bytes = 0, before = 0;
    auto take = [&](Proj& p) {
        before += p->weight.numel() * static_cast<int64_t>(p->weight.element_size());
        if (q.bits == 8) {
            auto w = std::make_shared<int8_rows::Int8Weight>(int8_rows::quantize(p->weight));
            bytes += w->nbytes();
            p->int8 = std::move(w);
        } else {
            auto w = std::make_shared<nf4::Nf4Weight>(nf4::quantize(p->weight, q.kind, q.double_quant));
            bytes += w->nbytes();
            p->nf4 = std::move(w);
        }
        quant::release_float_weight(p->weight);
    };
    model.release_packed_weights();
    for (auto& layer : model.model->layers) {
        for (Proj* p : layer_projections(*layer)) take(*p);
    }
    if (float_bytes) *float_bytes = before;
    return bytes;
}

}  // namespace pdsd::model::qlora
