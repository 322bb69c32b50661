// Qwen2ForCausalLM forward pass; see qwen2.h for the contract. Shapes: B batch, T new
// tokens, L = past + T keys, H hidden, V vocab, nh query heads, nkv key/value heads, hd head_dim.
#include "pdsd/model/qwen2.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/cpu_decode.h"
#include "pdsd/model/onednn.h"

#include "layer_projections.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <string>

namespace pdsd::model {

KVCache KVCache::allocate(const Qwen2Config& c, int64_t batch, int64_t max_len, at::TensorOptions options) {
    KVCache cache;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
        // Zeros, not empty: the fixed-shape decode (decode_fixed) multiplies every slot by a
        // zero weight or adds -inf to it, and a recycled CUDA block may hold NaN/Inf bit patterns.
        cache.k.push_back(at::zeros({batch, c.num_key_value_heads, max_len, c.head_dim()}, options));  // (B, nkv, max, hd)
        cache.v.push_back(at::zeros({batch, c.num_key_value_heads, max_len, c.head_dim()}, options));
    }
    cache.key_mask = at::zeros({batch, max_len}, options.dtype(at::kBool));  // (B, max)
    return cache;
}

ProjImpl::ProjImpl(int64_t in, int64_t out, bool has_bias, at::TensorOptions options) {
    weight = register_parameter("weight", at::empty({out, in}, options), false);  // (out, in)
    if (has_bias) bias = register_parameter("bias", at::empty({out}, options), false);  // (out)
}

namespace {
// x (..., in) through a packed weight (out, in) -> (..., out)
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias, int64_t out) {
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return onednn::linear(x.reshape({-1, x.size(-1)}), packed, bias).view(sizes);
}
}  // namespace

at::Tensor ProjImpl::forward(const at::Tensor& x) {
    at::Tensor y;  // (..., in) -> (..., out)
    if (nf4) {
        y = at::linear(x, nf4::dequantize(*nf4, x.scalar_type()), bias);
    } else if (int8) {
        y = at::linear(x, int8_rows::dequantize(*int8, x.scalar_type()), bias);
    } else if (quant) {
        y = quant::linear(x, {quant.get()}, {bias})[0];
    } else if (cpu_decode::applies(x, weight)) {
        y = cpu_decode::linear(x, {weight}, {bias})[0];  // decode rows on the CPU, bf16
    } else if (packed.defined() && !at::GradMode::is_enabled()) {
        y = packed_linear(x, packed, bias, weight.size(0));
    } else {
        y = at::linear(x, weight, bias);
    }
    return adapter ? adapter(x, y) : y;
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t hidden, at::TensorOptions options) {
    weight = register_parameter("weight", at::empty({vocab, hidden}, options), false);  // (V, H)
}

at::Tensor TokenEmbeddingImpl::forward(const at::Tensor& ids) {
    if (quant) return quant::dequantize_rows(*quant, ids, weight.scalar_type());  // (B, T, H)
    auto sizes = ids.sizes().vec();
    sizes.push_back(weight.size(1));
    return weight.index_select(0, ids.reshape({-1})).view(sizes);  // (B, T, H)
}

RMSNormImpl::RMSNormImpl(int64_t hidden, double eps_, at::TensorOptions options) : eps(eps_) {
    weight = register_parameter("weight", at::empty({hidden}, options), false);  // (H)
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
    if (cpu_decode::applies(x) && weight.scalar_type() == at::kBFloat16) return cpu_decode::rms_norm(x, weight, eps);
    // HF: x.float(); x * rsqrt(mean(x^2) + eps); weight * x.to(input_dtype)
    at::Tensor xf = x.to(at::kFloat);                                     // (..., H) fp32
    at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);                // (..., 1)
    return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());      // (..., H)
}

namespace {
at::Tensor rotate_half(const at::Tensor& x) {  // (..., hd): [x1, x2] -> [-x2, x1]
    int64_t half = x.size(-1) / 2;
    return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

Qwen2AttentionImpl::Qwen2AttentionImpl(const Qwen2Config& c, at::TensorOptions options)
    : n_heads(c.num_attention_heads), n_kv(c.num_key_value_heads), head_dim(c.head_dim()) {
    int64_t h = c.hidden_size;
    q_proj = register_module("q_proj", Proj(h, n_heads * head_dim, true, options));
    k_proj = register_module("k_proj", Proj(h, n_kv * head_dim, true, options));
    v_proj = register_module("v_proj", Proj(h, n_kv * head_dim, true, options));
    o_proj = register_module("o_proj", Proj(n_heads * head_dim, h, false, options));
}

at::Tensor Qwen2AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       const at::Tensor& mask, KVCache* cache, int64_t layer, const FixedSlot* fixed,
                                       const at::Tensor& residual) {
    const int64_t B = x.size(0), T = x.size(1);
    const bool plain = !q_proj->adapter && !k_proj->adapter && !v_proj->adapter && !o_proj->adapter;
    // Quantized weights (model/quant.h): q, k and v in one pass over x as well.
    const bool quantized = plain && q_proj->quant && k_proj->quant && v_proj->quant && o_proj->quant;
    auto qkv_of = [&](const at::Tensor& rows) {  // (B*T, nh*hd), 2 x (B*T, nkv*hd)
        if (quantized) {
            return quant::linear(rows, {q_proj->quant.get(), k_proj->quant.get(), v_proj->quant.get()},
                                 {q_proj->bias, k_proj->bias, v_proj->bias});
        }
        return cpu_decode::linear(rows, {q_proj->weight, k_proj->weight, v_proj->weight}, {q_proj->bias, k_proj->bias, v_proj->bias});
    };
    if (plain && (quantized ? cpu_decode::applies(x) : cpu_decode::applies(x, q_proj->weight))) {
        // CPU bf16 decode: q, k and v in one pass over x, rotated in place on their rows.
        auto qkv = qkv_of(x.reshape({B * T, -1}));
        cpu_decode::rotary_(qkv[0], head_dim, cos, sin);
        cpu_decode::rotary_(qkv[1], head_dim, cos, sin);
        if (cache && !fixed && !mask.defined() && T == 1) {
            // One unpadded query per row against the filled cache, then o_proj + residual.
            const int64_t L = cache->length + 1;
            cache->k[layer].narrow(2, cache->length, 1).copy_(qkv[1].view({B, n_kv, 1, head_dim}));
            cache->v[layer].narrow(2, cache->length, 1).copy_(qkv[2].view({B, n_kv, 1, head_dim}));
            at::Tensor a = cpu_decode::attention(qkv[0], cache->k[layer], cache->v[layer], L, n_heads).view({B, 1, -1});
            if (!residual.defined()) return o_proj(a);
            return quantized ? quant::linear_add(a, *o_proj->quant, residual) : cpu_decode::linear_add(a, o_proj->weight, residual);
        }
        return attend(qkv[0].view({B, T, n_heads, head_dim}).transpose(1, 2), qkv[1].view({B, T, n_kv, head_dim}).transpose(1, 2),
                      qkv[2].view({B, T, n_kv, head_dim}).transpose(1, 2), mask, cache, layer, fixed, residual);
    }
    std::vector<at::Tensor> qkv = quantized ? qkv_of(x) : std::vector<at::Tensor>{q_proj(x), k_proj(x), v_proj(x)};
    at::Tensor q = qkv[0].view({B, T, n_heads, head_dim}).transpose(1, 2);  // (B, nh, T, hd)
    at::Tensor k = qkv[1].view({B, T, n_kv, head_dim}).transpose(1, 2);     // (B, nkv, T, hd)
    at::Tensor v = qkv[2].view({B, T, n_kv, head_dim}).transpose(1, 2);     // (B, nkv, T, hd)
    at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);                     // (B, 1, T, hd)
    q = q * c + rotate_half(q) * s;
    k = k * c + rotate_half(k) * s;
    return attend(q, k, v, mask, cache, layer, fixed, residual);
}

at::Tensor Qwen2AttentionImpl::attend(const at::Tensor& q, at::Tensor k, at::Tensor v, const at::Tensor& mask, KVCache* cache,
                                      int64_t layer, const FixedSlot* fixed, const at::Tensor& residual) {
    const int64_t B = q.size(0), T = q.size(2);
    at::Tensor out;  // (B, T, H) before the residual
    if (fixed) {
        // T == 1. Query head h reads key/value head h / g (g = nh / nkv, heads grouped in
        // order), so the g query heads of one kv head form the rows of one small matmul
        // against that head's whole cache: no repeated keys. Scores and softmax in fp32.
        const int64_t g = n_heads / n_kv;  // scores below are (B, nkv, g, max_len)
        cache->k[layer].index_copy_(2, fixed->slot, k);  // k (B, nkv, 1, hd) into position slot
        cache->v[layer].index_copy_(2, fixed->slot, v);
        at::Tensor qg = q.reshape({B, n_kv, g, head_dim}).to(at::kFloat);                 // (B, nkv, g, hd)
        at::Tensor kt = cache->k[layer].to(at::kFloat).transpose(2, 3);                   // (B, nkv, hd, M)
        at::Tensor scores = at::matmul(qg, kt) * (1.0 / std::sqrt(static_cast<double>(head_dim)));  // (B, nkv, g, M)
        at::Tensor p = at::softmax(scores + fixed->bias, -1);                              // bias (B, 1, 1, M)
        at::Tensor a = at::matmul(p, cache->v[layer].to(at::kFloat)).to(q.scalar_type());  // (B, nkv, g, hd)
        out = o_proj(a.reshape({B, 1, n_heads * head_dim}));  // (B, 1, H)
    } else {
        if (cache) {
            const int64_t past = cache->length, L = past + T;
            cache->k[layer].narrow(2, past, T).copy_(k);
            cache->v[layer].narrow(2, past, T).copy_(v);
            k = cache->k[layer].narrow(2, 0, L);  // (B, nkv, L, hd), a view of the static cache
            v = cache->v[layer].narrow(2, 0, L);
        }
        // Undefined mask: plain causal attention (T > 1, nothing cached before) or a single
        // unpadded query that may see every key (T == 1).
        bool is_causal = !mask.defined() && T > 1;
        std::optional<at::Tensor> m;
        if (mask.defined()) m = mask;
        at::Tensor a = at::scaled_dot_product_attention(q, k, v, m, 0.0, is_causal, std::nullopt,
                                                        /*enable_gqa=*/n_kv != n_heads);  // (B, nh, T, hd)
        out = o_proj(a.transpose(1, 2).reshape({B, T, n_heads * head_dim}));            // (B, T, H)
    }
    return residual.defined() ? residual + out : out;
}

Qwen2MLPImpl::Qwen2MLPImpl(const Qwen2Config& c, at::TensorOptions options) {
    gate_proj = register_module("gate_proj", Proj(c.hidden_size, c.intermediate_size, false, options));
    up_proj = register_module("up_proj", Proj(c.hidden_size, c.intermediate_size, false, options));
    down_proj = register_module("down_proj", Proj(c.intermediate_size, c.hidden_size, false, options));
}

at::Tensor Qwen2MLPImpl::forward(const at::Tensor& x, const at::Tensor& residual) {
    if (!gate_proj->adapter && !up_proj->adapter && !down_proj->adapter && gate_proj->quant && up_proj->quant && down_proj->quant) {
        // Quantized weights (model/quant.h): the same fusion as the bf16 kernels below.
        at::Tensor a = quant::silu_mul(x, *gate_proj->quant, *up_proj->quant);  // (B, T, I)
        return residual.defined() ? quant::linear_add(a, *down_proj->quant, residual) : down_proj(a);
    }
    if (!gate_proj->adapter && !up_proj->adapter && !down_proj->adapter && cpu_decode::applies(x, gate_proj->weight)) {
        // CPU bf16 decode: gate, up and SiLU in one pass, the residual added by down_proj's kernel.
        at::Tensor a = cpu_decode::silu_mul(x, gate_proj->weight, up_proj->weight);  // (B, T, I)
        return residual.defined() ? cpu_decode::linear_add(a, down_proj->weight, residual) : down_proj(a);
    }
    at::Tensor y = down_proj(at::silu(gate_proj(x)) * up_proj(x));  // (B, T, I) -> (B, T, H)
    return residual.defined() ? residual + y : y;
}

Qwen2DecoderLayerImpl::Qwen2DecoderLayerImpl(const Qwen2Config& c, at::TensorOptions options) {
    self_attn = register_module("self_attn", Qwen2Attention(c, options));
    mlp = register_module("mlp", Qwen2MLP(c, options));
    input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
    post_attention_layernorm =
        register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor Qwen2DecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                          const at::Tensor& mask, KVCache* cache, int64_t layer, const FixedSlot* fixed) {
    at::Tensor h = self_attn(input_layernorm(x), cos, sin, mask, cache, layer, fixed, /*residual=*/x);  // x + attn(...)
    return mlp(post_attention_layernorm(h), /*residual=*/h);                                         // h + mlp(...)
}

Qwen2ModelImpl::Qwen2ModelImpl(const Qwen2Config& c, at::TensorOptions options) {
    embed_tokens = register_module("embed_tokens", TokenEmbedding(c.vocab_size, c.hidden_size, options));
    torch::nn::ModuleList list;  // children named "0", "1", ...: keys "layers.N.*"
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
        layers.push_back(Qwen2DecoderLayer(c, options));
        list->push_back(layers.back());
    }
    register_module("layers", list);
    norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

Qwen2ForCausalLMImpl::Qwen2ForCausalLMImpl(const Qwen2Config& config, at::TensorOptions options)
    : config_(config), options_(options) {
    model = register_module("model", Qwen2Model(config, options));
    if (!config.tie_word_embeddings) {
        lm_head = register_module("lm_head", Proj(config.hidden_size, config.vocab_size, false, options));
    }
    // HF: 1 / theta^(arange(0, hd, 2) / hd), in fp32.
    const int64_t hd = config.head_dim();
    at::Tensor expo = at::arange(0, hd, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) / static_cast<double>(hd);
    inv_freq_ = at::reciprocal(at::pow(config.rope_theta, expo)).to(options.device());  // (hd/2) fp32
}

ForwardOutput Qwen2ForCausalLMImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                            const at::Tensor& position_ids, KVCache* cache, ForwardOptions opts) {
    const int64_t B = input_ids.size(0), T = input_ids.size(1);
    const int64_t past = cache ? cache->length : 0, L = past + T;
    const auto dev = options_.device();
    if (cache && (cache->batch() != B || L > cache->max_len())) {
        throw ShapeError(ErrorInfo{}.at("KV cache").expected("batch " + std::to_string(cache->batch()) +
                                                                 ", at most " + std::to_string(cache->max_len()) + " positions")
                             .found("batch " + std::to_string(B) + ", " + std::to_string(L) + " positions"));
    }
    at::Tensor mask_in;  // (B, L) bool or undefined
    if (attention_mask.defined()) {
        mask_in = attention_mask.to(dev).to(at::kBool);
        if (mask_in.size(1) == T && past > 0) {  // only the new tokens given: earlier ones from the cache
            mask_in = at::cat({cache->key_mask.narrow(1, 0, past), mask_in}, 1);
        }
        if (mask_in.size(0) != B || mask_in.size(1) != L) {
            throw ShapeError(ErrorInfo{}.at("attention_mask").expected("(" + std::to_string(B) + ", " + std::to_string(L) + ")")
                                 .found("(" + std::to_string(mask_in.size(0)) + ", " + std::to_string(mask_in.size(1)) + ")"));
        }
    }
    bool padded = false;
    if (cache) {
        if (mask_in.defined()) {
            cache->key_mask.narrow(1, 0, L).copy_(mask_in);
            cache->has_padding = !mask_in.all().item<bool>();
        } else {
            cache->key_mask.narrow(1, past, T).fill_(true);
        }
        padded = cache->has_padding;
        if (padded) mask_in = cache->key_mask.narrow(1, 0, L);
    } else if (mask_in.defined()) {
        padded = !mask_in.all().item<bool>();
        if (padded && T > 1) {
            // Right padding only (training batches): a real query never sees the pad keys after
            // it under the causal mask, so plain causal attention is exact at every real
            // position and keeps SDPA on its fused kernels (a bool mask with GQA forces the
            // math kernel and its (B, nh, T, T) scores). Pad positions' outputs are unused.
            at::Tensor m = mask_in.to(at::kByte);
            bool right_only = (m.narrow(1, 1, T - 1) <= m.narrow(1, 0, T - 1)).all().item<bool>();
            if (right_only) {
                padded = false;
                mask_in = at::Tensor();
            }
        }
    }

    at::Tensor pos = position_ids;  // (B, T)
    if (!pos.defined()) {
        if (mask_in.defined()) {
            pos = (mask_in.to(at::kLong).cumsum(1) - 1).clamp_min(0).narrow(1, past, T);
        } else {
            pos = at::arange(past, L, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0).expand({B, T});
        }
    }
    auto [cos, sin] = rotary(pos.to(dev));  // (B, T, hd) each

    // Attention mask (B, 1, T, L), true = attend: causal AND key is a real token; a query may
    // always see itself so that padded query rows do not become NaN (their outputs are unused).
    at::Tensor mask;
    if (padded || (T > 1 && past > 0)) {
        auto lopt = at::TensorOptions().dtype(at::kLong).device(dev);
        at::Tensor qpos = at::arange(past, L, lopt).unsqueeze(1);  // (T, 1)
        at::Tensor kpos = at::arange(0, L, lopt).unsqueeze(0);     // (1, L)
        mask = (kpos <= qpos).unsqueeze(0);                        // (1, T, L)
        if (padded) mask = (mask & mask_in.unsqueeze(1)) | (kpos == qpos).unsqueeze(0);  // (B, T, L)
        mask = mask.unsqueeze(1);                                  // (B|1, 1, T, L)
    }

    ForwardOutput out;
    at::Tensor h = model->embed_tokens(input_ids.to(dev));  // (B, T, H)
    if (opts.output_hidden_states) out.hidden_states.push_back(h);
    const int64_t n = static_cast<int64_t>(model->layers.size());
    for (int64_t i = 0; i < n; ++i) {
        if (opts.layer_wrapper) {
            std::function<at::Tensor(const at::Tensor&)> run = [layer = model->layers[i].ptr(), cos, sin, mask, cache, i](const at::Tensor& x) {
                return layer->forward(x, cos, sin, mask, cache, i);
            };
            h = opts.layer_wrapper(i, run, h);  // (B, T, H)
        } else {
            h = model->layers[i]->forward(h, cos, sin, mask, cache, i);  // (B, T, H)
        }
        if (opts.output_hidden_states && i + 1 < n) out.hidden_states.push_back(h);
    }
    h = model->norm(h);  // (B, T, H)
    if (opts.output_hidden_states) out.hidden_states.push_back(h);
    if (cache) cache->length = L;

    if (opts.last_logits_only) {
        // A fresh (B, 1, H) tensor, not the narrow view: with the view's strides at::linear
        // takes the bmm path, whose bf16 CPU kernel copied the transposed 151936 x 896 tied
        // weight element by element on every prefill (~20 s of CPU).
        h = at::empty({B, 1, h.size(2)}, h.options()).copy_(h.narrow(1, T - 1, 1));
    }
    out.logits = logits_of(h);  // (B, T|1, V)
    return out;
}

std::pair<at::Tensor, at::Tensor> Qwen2ForCausalLMImpl::rotary(const at::Tensor& pos) const {
    // cos/sin in fp32 (HF disables autocast here), then cast to the model dtype.
    at::Tensor freqs = pos.to(at::kFloat).unsqueeze(-1) * inv_freq_.view({1, 1, -1});  // (B, T, hd/2)
    at::Tensor emb = at::cat({freqs, freqs}, -1);                                      // (B, T, hd)
    return {emb.cos().to(options_.dtype()), emb.sin().to(options_.dtype())};
}

at::Tensor Qwen2ForCausalLMImpl::logits_of(const at::Tensor& h) {
    if (lm_head) return lm_head(h);
    if (model->embed_tokens->quant) return quant::linear(h, {model->embed_tokens->quant.get()}, {})[0];
    const at::Tensor& tied = model->embed_tokens->weight;  // (V, H)
    if (cpu_decode::applies(h, tied)) return cpu_decode::linear(h, {tied}, {})[0];
    if (lm_head_packed_.defined() && !at::GradMode::is_enabled()) {
        return packed_linear(h, lm_head_packed_, at::Tensor(), tied.size(0));
    }
    return at::linear(h, tied);
}

bool Qwen2ForCausalLMImpl::pack_cpu_weights() {
    if (!options_.device().is_cpu() || options_.dtype() != at::kBFloat16 || !onednn::available()) return false;
    std::vector<Proj> projs;
    for (auto& layer : model->layers) {
        for (Proj* p : layer_projections(*layer)) projs.push_back(*p);
    }
    if (lm_head) projs.push_back(lm_head);
    try {
        at::NoGradGuard no_grad;
        for (auto& p : projs) p->packed = onednn::pack(p->weight);
        if (!lm_head) lm_head_packed_ = onednn::pack(model->embed_tokens->weight);
    } catch (const c10::Error& e) {
        // Only a speed-up: fall back to at::linear everywhere.
        for (auto& p : projs) p->packed = at::Tensor();
        lm_head_packed_ = at::Tensor();
        log::warn("model", log::cat("oneDNN weight packing failed, using at::linear: ", e.what_without_backtrace()));
        return false;
    }
    return true;
}

void Qwen2ForCausalLMImpl::release_packed_weights() {
    for (auto& layer : model->layers) {
        for (Proj* p : layer_projections(*layer)) (*p)->packed = at::Tensor();
    }
    if (lm_head) lm_head->packed = at::Tensor();
    lm_head_packed_ = at::Tensor();
}

at::Tensor Qwen2ForCausalLMImpl::decode_fixed(const at::Tensor& ids, const at::Tensor& pos, const at::Tensor& slot,
                                              KVCache& cache) {
    const int64_t M = cache.max_len();
    cache.key_mask.index_fill_(1, slot, true);  // the new token is real
    // A key is visible when it is a real token at or before this step's slot; later positions
    // may hold a previous generation's keys.
    at::Tensor upto = at::arange(M, at::TensorOptions().dtype(at::kLong).device(slot.device())) <= slot;  // (M)
    at::Tensor visible = cache.key_mask & upto.unsqueeze(0);                                                // (B, M)
    FixedSlot fixed{slot, at::zeros(visible.sizes(), at::TensorOptions().dtype(at::kFloat).device(slot.device()))
                              .masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity())
                              .view({visible.size(0), 1, 1, M})};
    auto [cos, sin] = rotary(pos);  // (B, 1, hd)
    at::Tensor h = model->embed_tokens(ids);  // (B, 1, H)
    for (size_t i = 0; i < model->layers.size(); ++i) {
        h = model->layers[i]->forward(h, cos, sin, at::Tensor(), &cache, static_cast<int64_t>(i), &fixed);
    }
    return logits_of(model->norm(h)).select(1, 0);  // (B, V)
}

}  // namespace pdsd::model
