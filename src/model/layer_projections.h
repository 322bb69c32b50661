// Private to src/model: the seven linear projections of a Qwen2 decoder layer with their HF
// names under "model.layers.N.", in HF's order: what bitsandbytes' Linear4bit / Linear8bitLt and pdsd's
// --quant replace, what the bf16 path packs for oneDNN. One list, so the places that walk
// the projections (quant.cpp, qlora_base.cpp, qwen2.cpp) cannot drift apart.
#pragma once

#include "pdsd/model/qwen2.h"

#include <array>
#include <utility>

namespace pdsd::model {

constexpr std::array<const char*, 7> kLayerProjectionNames = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

// The layer's projections, in the order of kLayerProjectionNames.
inline std::array<Proj*, 7> layer_projections(Qwen2DecoderLayerImpl& layer) {
    auto& a = *layer.self_attn;
    auto& m = *layer.mlp;
    return {&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj};
}

}  // namespace pdsd::model
