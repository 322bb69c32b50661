// Qwen2ForCausalLM (Qwen2 / Qwen2.5, any size) as libtorch modules.
//
// Modules are registered under Hugging Face's names, so named_parameters() keys equal the
// safetensors keys: model.embed_tokens.weight, model.layers.N.input_layernorm.weight,
// model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}, model.layers.N.self_attn.o_proj.weight,
// model.layers.N.post_attention_layernorm.weight, model.layers.N.mlp.{gate,up,down}_proj.weight,
// model.norm.weight and lm_head.weight (only when tie_word_embeddings is false; tied models
// compute logits = hidden @ embed_tokens.weight^T).
//
// The math follows HF modeling_qwen2.py: RMSNorm in fp32 then cast back; rotate-half rotary
// embedding with inv_freq = theta^(-2i/head_dim) and cos/sin computed in fp32; GQA causal
// attention through at::scaled_dot_product_attention; MLP down(silu(gate(x)) * up(x)).
//
// Parameters are created uninitialised (at::empty) on the given device/dtype: the loader
// (loader.h) copies the checkpoint in once; `pdsd model init` fills them randomly.
#pragma once

#include "pdsd/core/hf_config.h"
#include "pdsd/model/int8_rows.h"
#include "pdsd/model/nf4.h"
#include "pdsd/model/quant.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace pdsd::model {

// Static key/value cache: one preallocated (B, n_kv_heads, max_len, head_dim) tensor pair per
// layer. Positions [0, length) are filled. key_mask marks real tokens (false = left padding).
struct KVCache {
    std::vector<at::Tensor> k, v;  // per layer: (B, n_kv, max_len, head_dim)
    at::Tensor key_mask;           // (B, max_len) bool
    int64_t length = 0;            // filled positions
    bool has_padding = false;      // some key_mask entry below `length` is false

    static KVCache allocate(const Qwen2Config& config, int64_t batch, int64_t max_len, at::TensorOptions options);
    int64_t batch() const { return key_mask.defined() ? key_mask.size(0) : 0; }
    int64_t max_len() const { return key_mask.defined() ? key_mask.size(1) : 0; }
    void reset() { length = 0; has_padding = false; }
};

// Fixed-shape decode (CUDA graphs, model/cuda_graph.h): the step's keys/values go to cache
// position `slot` and attention covers all max_len positions with an additive `bias`, so no
// shape depends on the step and nothing reads a device value on the host.
struct FixedSlot {
    at::Tensor slot;  // (1) int64 on the model's device: the cache position written this step
    at::Tensor bias;  // (B, 1, 1, max_len) fp32: 0 where a key may be seen, -inf elsewhere
};

// y = x W^T + b, with HF's parameter names "weight" (out, in) and optional "bias" (out).
class ProjImpl : public torch::nn::Module {
public:
    ProjImpl(int64_t in, int64_t out, bool bias, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x);  // (..., in) -> (..., out)
    at::Tensor weight, bias;
    // oneDNN-packed copy of `weight` (model/onednn.h), used instead of it when defined and
    // autograd is off; made by Qwen2ForCausalLMImpl::pack_cpu_weights, never updated after.
    at::Tensor packed;
    // Optional adapter (LoRA, lora/inject.h): when set, forward returns adapter(x, x W^T + b).
    std::function<at::Tensor(const at::Tensor& x, const at::Tensor& base_out)> adapter;
    // Quantized copy of `weight` (quant::quantize_model, inference only): used instead of it.
    quant::QuantWeightPtr quant;
    // QLoRA's copy of `weight` (qlora::quantize_base), 4-bit or 8-bit: dequantized to x's dtype
    // per call, autograd on (gradients reach x and the adapter, never the weight).
    nf4::Nf4WeightPtr nf4;
    int8_rows::Int8WeightPtr int8;
};
TORCH_MODULE(Proj);

// Embedding table "weight" (V, H); lookup is index_select.
class TokenEmbeddingImpl : public torch::nn::Module {
public:
    TokenEmbeddingImpl(int64_t vocab, int64_t hidden, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& ids);  // (B, T) int64 -> (B, T, H)
    at::Tensor weight;
    quant::QuantWeightPtr quant;  // quant::quantize_model: rows looked up (and the tied LM head) from it
};
TORCH_MODULE(TokenEmbedding);

class RMSNormImpl : public torch::nn::Module {
public:
    RMSNormImpl(int64_t hidden, double eps, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x);  // (..., hidden) -> same shape and dtype
    at::Tensor weight;                        // (hidden)
    double eps;
};
TORCH_MODULE(RMSNorm);

class Qwen2AttentionImpl : public torch::nn::Module {
public:
    Qwen2AttentionImpl(const Qwen2Config& c, at::TensorOptions options);
    // x (B, T, H); cos/sin (B, T, head_dim); mask: bool (B, 1, T, L) or undefined (causal);
    // cache: writes this step's k/v at positions [past, past+T) of layer `layer`.
    // fixed (T == 1, cache required): write at fixed->slot instead and attend over the whole
    // cache with fixed->bias (mask is then ignored). With a residual (B, T, H): returns
    // residual + attention (fused into o_proj on the CPU decode path).
    at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask, KVCache* cache, int64_t layer, const FixedSlot* fixed = nullptr,
                       const at::Tensor& residual = {});
    Proj q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
    int64_t n_heads, n_kv, head_dim;

private:
    // Everything after the rotary embedding: q (B, nh, T, hd), k/v (B, nkv, T, hd).
    at::Tensor attend(const at::Tensor& q, at::Tensor k, at::Tensor v, const at::Tensor& mask, KVCache* cache,
                      int64_t layer, const FixedSlot* fixed, const at::Tensor& residual);
};
TORCH_MODULE(Qwen2Attention);

class Qwen2MLPImpl : public torch::nn::Module {
public:
    Qwen2MLPImpl(const Qwen2Config& c, at::TensorOptions options);
    // (B, T, H) -> (B, T, H); with a residual (B, T, H) returns residual + mlp(x).
    at::Tensor forward(const at::Tensor& x, const at::Tensor& residual = {});
    Proj gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Qwen2MLP);

class Qwen2DecoderLayerImpl : public torch::nn::Module {
public:
    Qwen2DecoderLayerImpl(const Qwen2Config& c, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask, KVCache* cache, int64_t layer, const FixedSlot* fixed = nullptr);
    RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
    Qwen2Attention self_attn{nullptr};
    Qwen2MLP mlp{nullptr};
};
TORCH_MODULE(Qwen2DecoderLayer);

struct ForwardOutput {
    at::Tensor logits;                       // (B, T, V), or (B, 1, V) with last_logits_only
    std::vector<at::Tensor> hidden_states;   // n_layers + 1 entries of (B, T, H) when requested:
                                             // [0] embeddings, [i] after layer i-1, last after model.norm
};

struct ForwardOptions {
    bool output_hidden_states = false;
    bool last_logits_only = false;  // prefill/decode: only the last position's logits
    // Optional wrapper around each decoder layer (training's activation checkpointing,
    // train/checkpointing.h): called as layer_wrapper(i, run, h) and must return run(h); `run`
    // holds copies of everything the layer needs, so it may be called again later.
    std::function<at::Tensor(int64_t layer, const std::function<at::Tensor(const at::Tensor&)>& run, const at::Tensor& x)>
        layer_wrapper;
};

// "model": embeddings, decoder layers, final norm.
class Qwen2ModelImpl : public torch::nn::Module {
public:
    Qwen2ModelImpl(const Qwen2Config& c, at::TensorOptions options);
    TokenEmbedding embed_tokens{nullptr};
    std::vector<Qwen2DecoderLayer> layers;     // "layers.N" (registered through a ModuleList)
    RMSNorm norm{nullptr};
};
TORCH_MODULE(Qwen2Model);

class Qwen2ForCausalLMImpl : public torch::nn::Module {
public:
    Qwen2ForCausalLMImpl(const Qwen2Config& config, at::TensorOptions options);

    // input_ids (B, T) int64. attention_mask (B, past+T) (1 = token, 0 = left padding; may be
    // undefined = no padding). position_ids (B, T) (undefined: cumsum(mask)-1 clamped at 0, or
    // past..past+T-1). With `cache`, past = cache->length; keys/values of this call are
    // appended and cache->length advances by T.
    ForwardOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                          const at::Tensor& position_ids = {}, KVCache* cache = nullptr,
                          ForwardOptions opts = {});

    // One decode step with fixed shapes and no host synchronisation, so it can be captured in
    // a CUDA graph: ids (B, 1) int64 and position_ids (B, 1) int64 on the model's device;
    // slot (1) int64 = the cache position to fill (the caller keeps cache.length in step).
    // Marks key_mask[:, slot] as a real token. Returns logits (B, V) in the model dtype.
    at::Tensor decode_fixed(const at::Tensor& ids, const at::Tensor& position_ids, const at::Tensor& slot, KVCache& cache);

    // CPU bf16 inference: pack every projection and the LM head for oneDNN once (model/onednn.h),
    // so steps stop re-packing ~1 GB of weights per call. Extra memory: one packed copy of the
    // weights (the mapped checkpoint pages stay reclaimable). The packed copies are not
    // updated if weights change later: call it only for inference (Generator does, on CPUs
    // without the AVX512_BF16 decode kernels, which read the checkpoint tensors as they are).
    // Returns false, changing nothing, on other devices/dtypes, without oneDNN, or if oneDNN
    // refuses.
    bool pack_cpu_weights();
    void release_packed_weights();  // drops what pack_cpu_weights made (quant::quantize_model)

    const Qwen2Config& config() const { return config_; }
    at::TensorOptions options() const { return options_; }

    Qwen2Model model{nullptr};
    Proj lm_head{nullptr};  // only when !tie_word_embeddings

private:
    // cos, sin (B, T, head_dim) in the model dtype for position ids (B, T); fp32 math as HF.
    std::pair<at::Tensor, at::Tensor> rotary(const at::Tensor& position_ids) const;
    at::Tensor logits_of(const at::Tensor& h);  // (..., H) -> (..., V)

    Qwen2Config config_;
    at::TensorOptions options_;
    at::Tensor inv_freq_;  // (head_dim/2) fp32 on the model's device
    at::Tensor lm_head_packed_;  // tied models: packed embed_tokens.weight (pack_cpu_weights)
};
TORCH_MODULE(Qwen2ForCausalLM);

}  // namespace pdsd::model
