// QLoRA's frozen base (LLaMA-Factory `quantization_bit`, bitsandbytes through transformers'
// BitsAndBytesConfig): every decoder-layer projection (q k v o gate up down, the Linear layers
// bitsandbytes replaces; embeddings, norms and lm_head stay) is held quantized and dequantized to
// the activations' dtype for each matmul, while a LoRA adapter trains on top.
//   4: bitsandbytes Linear4bit, NF4/FP4 blocks of 64 (model/nf4.h), double quantization optional.
//   8: bitsandbytes Linear8bitLt, row-wise int8 CB + SCB (model/int8_rows.h). quantization_type and
//      double_quantization are 4-bit keys and ignored, as LLaMA-Factory passes only
//      BitsAndBytesConfig(load_in_8bit=True).
#pragma once

#include "pdsd/model/nf4.h"

#include <cstdint>
#include <string>

namespace pdsd::model {
class Qwen2ForCausalLMImpl;  // qwen2.h
}

namespace pdsd::model::qlora {

struct BaseQuant {
    int64_t bits = 0;                 // 0 (float base) | 4 | 8
    nf4::Kind kind = nf4::Kind::nf4;  // bits 4 only
    bool double_quant = true;         // bits 4 only
    // "4-bit nf4, double quantization" | "8-bit int8 rows"; empty for a float base.
    std::string describe() const;
    // Storage of the projections, bytes per weight (block / row statistics included; the 8-bit
    // row scale adds 4/K, taken at K = `in_features`).
    double bytes_per_weight(int64_t in_features) const;
};

// LLaMA-Factory's keys -> the storage. ConfigError naming quantization_bit (4 | 8) or, with 4,
// quantization_type (nf4 | fp4). 0 = no quantization.
BaseQuant parse(int64_t quantization_bit, const std::string& quantization_type, bool double_quantization);

// Quantizes the projections in place (Proj::nf4 or Proj::int8 set, the float weights released
// by quant::release_float_weight). Returns the bytes the quantized copies hold; `float_bytes`
// gets what the float weights held. bits 0: nothing changes, returns 0.
int64_t quantize_base(Qwen2ForCausalLMImpl& model, const BaseQuant& q, int64_t* float_bytes = nullptr);

}  // namespace pdsd::model::qlora
