// BertModel / XLMRobertaModel forward in ATen ops (see include/pdsd/model/bert.h). fp32 by
// default so that embeddings match Hugging Face within 1e-5; bf16 on request. The two
// families share everything but the position ids (pos_offset_) and the tokenizer.
#include "pdsd/model/bert.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/onednn.h"
#include "pdsd/model/weights.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <optional>

namespace pdsd::model {

namespace fs = std::filesystem;

namespace {

// Linears use oneDNN's pre-packed fused ops when available (model/onednn.h): bias + GELU and
// bias + residual add run inside the matmul. Same fp32 numbers as at::linear (~1e-6); in bf16
// the GELU/add are applied to the fp32 accumulator before the bf16 rounding. Absent (a build
// without oneDNN) or failing at load: plain at::linear + at::gelu.

// PDSD_EMBED_PROFILE=1: wall seconds per step of the packed forward (CPU ops are
// synchronous, so lap times are op times), logged after each embed_ids call.
struct Timer {
    bool on;
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
    explicit Timer(bool o) : on(o) {}
    void lap(double& acc) {
        if (!on) return;
        auto n = std::chrono::steady_clock::now();
        acc += std::chrono::duration<double>(n - t).count();
        t = n;
    }
};
const char* const kProfNames[] = {"embeddings", "qkv linear", "attention", "attn out+add+LN", "intermediate+GELU",
                                  "output+add+LN", "tokenize", "(attention: pad)", "(attention: sdpa)"};

struct Linear {
    at::Tensor w, b;   // [out, in], [out]; w is oneDNN-packed when `packed` (then only the fused ops read it)
    bool packed = false;

    // Packs w for mkldnn::_linear_pointwise (throws c10::Error when oneDNN refuses).
    void pack() {
        w = onednn::pack(w);
        packed = true;
    }
    // x [T, in] -> [T, out]
    at::Tensor operator()(const at::Tensor& x) const {
        if (!packed) return at::linear(x, w, b);
        return onednn::linear(x, w, b);
    }
    // gelu(x W^T + b); approximate: "none" (erf) | "tanh"
    at::Tensor gelu(const at::Tensor& x, const std::string& approximate) const {
        if (!packed) return at::gelu(at::linear(x, w, b), approximate);
        return onednn::linear(x, w, b, "gelu", approximate);
    }
    // x W^T + b + residual (residual [T, out], same dtype)
    at::Tensor add(const at::Tensor& x, const at::Tensor& residual) const {
        if (!packed) return at::linear(x, w, b).add_(residual);
        return onednn::linear_add(x, residual, w, b);
    }
};
struct Norm {
    at::Tensor w, b;   // [hidden]
};
struct Layer {
    Linear qkv;        // query|key|value fused: [3*hidden, hidden]
    Linear attn_out;   // attention.output.dense
    Norm attn_ln;      // attention.output.LayerNorm
    Linear inter;      // intermediate.dense [intermediate, hidden]
    Linear out;        // output.dense [hidden, intermediate]
    Norm out_ln;       // output.LayerNorm
};

class BertEmbedderImpl final : public BertEmbedder {
public:
    BertEmbedderImpl(const std::string& dir, const BertEmbedOptions& o) : opt_(o) {
        cfg_ = load_bert_config(dir);
        if (cfg_.hidden_act == "gelu") gelu_approx_ = "none";
        else if (cfg_.hidden_act == "gelu_new" || cfg_.hidden_act == "gelu_pytorch_tanh") gelu_approx_ = "tanh";
        else
            throw ConfigError(ErrorInfo{dir + "/config.json"}.at("hidden_act").expected("gelu").found(cfg_.hidden_act));
        if (cfg_.hidden_size % cfg_.num_attention_heads != 0)
            throw ConfigError(ErrorInfo{dir + "/config.json"}.at("hidden_size").expected("a multiple of num_attention_heads"));
        dtype_name_ = o.dtype == "auto" ? (cpu_has_native_bf16() ? "bf16" : "fp32") : o.dtype;
        dtype_ = parse_dtype_name(dtype_name_);
        if (dtype_ == c10::kHalf) throw UsageError(ErrorInfo{}.at("embed dtype").expected("fp32, bf16 or auto").found(o.dtype));
        dtype_name_ = dtype_ == c10::kBFloat16 ? "bf16" : "fp32";

        fs::path d(dir);
        roberta_ = tokenizer::is_xlm_roberta_config(dir);
        if (roberta_) {
            // RoBERTa: position ids start at padding_idx + 1 (create_position_ids_from_input_ids),
            // so a sequence holds at most max_position_embeddings - padding_idx - 1 tokens.
            pad_id_ = cfg_.pad_token_id;
            pos_offset_ = pad_id_ + 1;
            if (pos_offset_ >= cfg_.max_position_embeddings)
                throw ConfigError(ErrorInfo{dir + "/config.json"}.at("pad_token_id").expected("< max_position_embeddings - 1"));
            // A tokenizer.json-only folder throws there (sentencepiece.bpe.model is required).
            if (tokenizer::has_xlmr_tokenizer(dir) || fs::exists(d / "tokenizer.json"))
                xtok_.emplace(tokenizer::XlmrTokenizer::load(dir));
        } else if (fs::exists(d / "vocab.txt") || fs::exists(d / "tokenizer.json")) {
            tok_.emplace(tokenizer::WordPieceTokenizer::load(dir));
        }
        size_t ml = static_cast<size_t>(cfg_.max_position_embeddings - pos_offset_);
        if (tok_ && tok_->options().model_max_length) ml = std::min(ml, tok_->options().model_max_length);
        if (xtok_ && xtok_->model_max_length()) ml = std::min(ml, xtok_->model_max_length());
        if (o.max_length) ml = std::min(ml, o.max_length);
        max_length_ = ml;

        Checkpoint ck = Checkpoint::open(dir);
        // HF names: BertModel / XLMRobertaModel without a prefix, *For* heads under "bert." / "roberta.".
        std::string prefix = ck.contains("embeddings.word_embeddings.weight") ? ""
                             : ck.contains("roberta.embeddings.word_embeddings.weight") ? "roberta." : "bert.";
        auto get = [&](const std::string& name, std::vector<int64_t> shape) {
            std::string full = prefix + name;
            if (!ck.contains(full))
                throw FormatError(ErrorInfo{ck.source()}.at(full).msg("missing tensor").hint("not a BertModel checkpoint?"));
            at::Tensor t = checkpoint_tensor(ck, full);
            if (t.sizes().vec() != shape) {
                std::string e, f;
                for (auto s : shape) e += (e.empty() ? "[" : ",") + std::to_string(s);
                for (auto s : t.sizes()) f += (f.empty() ? "[" : ",") + std::to_string(s);
                throw ShapeError(ErrorInfo{ck.source()}.at(full).expected(e + "]").found(f + "]"));
            }
            return t.to(dtype_).contiguous().clone();   // own the memory (the mapping dies)
        };
        const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size;
        word_ = get("embeddings.word_embeddings.weight", {cfg_.vocab_size, H});
        pos_ = get("embeddings.position_embeddings.weight", {cfg_.max_position_embeddings, H});
        type_ = get("embeddings.token_type_embeddings.weight", {cfg_.type_vocab_size, H});
        emb_ln_ = {get("embeddings.LayerNorm.weight", {H}), get("embeddings.LayerNorm.bias", {H})};
        for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
            std::string p = "encoder.layer." + std::to_string(l) + ".";
            Layer L;
            L.qkv.w = at::cat({get(p + "attention.self.query.weight", {H, H}), get(p + "attention.self.key.weight", {H, H}),
                               get(p + "attention.self.value.weight", {H, H})}, 0);
            L.qkv.b = at::cat({get(p + "attention.self.query.bias", {H}), get(p + "attention.self.key.bias", {H}),
                               get(p + "attention.self.value.bias", {H})}, 0);
            L.attn_out = {get(p + "attention.output.dense.weight", {H, H}), get(p + "attention.output.dense.bias", {H})};
            L.attn_ln = {get(p + "attention.output.LayerNorm.weight", {H}), get(p + "attention.output.LayerNorm.bias", {H})};
            L.inter = {get(p + "intermediate.dense.weight", {I, H}), get(p + "intermediate.dense.bias", {I})};
            L.out = {get(p + "output.dense.weight", {H, I}), get(p + "output.dense.bias", {H})};
            L.out_ln = {get(p + "output.LayerNorm.weight", {H}), get(p + "output.LayerNorm.bias", {H})};
            layers_.push_back(std::move(L));
        }
        if (const char* p = std::getenv("PDSD_EMBED_PROFILE"); p && std::string(p) == "1") prof_on_ = true;
        if (o.fused_linear && onednn::available() && !layers_.empty()) {
            // Probe the three fused ops on copies of layer 0 first (a CPU without bf16 support
            // accepts the packing and refuses the matmul); then pack every linear.
            try {
                c10::InferenceMode guard;
                Layer probe = layers_[0];   // pack() replaces probe's tensors, not layer 0's
                probe.inter.pack();
                probe.out.pack();
                at::Tensor x = at::zeros({1, H}, word_.options());
                probe.inter(x);
                probe.out.add(probe.inter.gelu(x, gelu_approx_), x);
                for (auto& L : layers_)
                    for (Linear* lin : {&L.qkv, &L.attn_out, &L.inter, &L.out}) lin->pack();
            } catch (const c10::Error& e) {
                for (auto& L : layers_)
                    for (Linear* lin : {&L.qkv, &L.attn_out, &L.inter, &L.out})
                        if (lin->packed) throw InternalError(ErrorInfo{dir}.msg(std::string("oneDNN packing failed half-way: ") + e.what_without_backtrace()));
                log::warn("bert", log::cat("oneDNN fused linear unavailable (", e.what_without_backtrace(), "); using at::linear"));
            }
        }
        // token_type_ids are all 0: fold that row into the position table once.
        pos_type_ = pos_.add(type_[0]).contiguous();
    }

    // ids [B, L] int64, mask [B, L] bool (or undefined: no padding) -> last_hidden [B, L, H].
    at::Tensor run(const at::Tensor& ids, const at::Tensor& mask) const {
        const int64_t B = ids.size(0), L = ids.size(1), H = cfg_.hidden_size, nh = cfg_.num_attention_heads;
        const int64_t hd = H / nh;
        const double eps = cfg_.layer_norm_eps;
        at::Tensor x = at::embedding(word_, ids);
        if (roberta_) {
            // HF create_position_ids_from_input_ids: non-pad tokens count up from pad+1,
            // pad tokens (by id) get position pad.
            at::Tensor m = ids.ne(pad_id_).to(at::kLong);
            x.add_(at::embedding(pos_type_, m.cumsum(1).mul_(m).add_(pad_id_)));
        } else {
            x.add_(pos_type_.narrow(0, 0, L));
        }
        x = at::layer_norm(x, {H}, emb_ln_.w, emb_ln_.b, eps);
        // SDPA boolean mask, true = may attend: [B, 1, 1, L] broadcast over heads and queries.
        std::optional<at::Tensor> am;
        if (mask.defined()) am = mask.view({B, 1, 1, L});
        x = x.reshape({B * L, H});   // the linears see [B*L, H]
        for (const auto& ly : layers_) {
            at::Tensor qkv = ly.qkv(x).view({B, L, 3, nh, hd}).permute({2, 0, 3, 1, 4});   // [3, B, nh, L, hd]
            at::Tensor a = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], am);     // [B, nh, L, hd]
            a = a.transpose(1, 2).reshape({B * L, H});
            x = at::layer_norm(ly.attn_out.add(a, x), {H}, ly.attn_ln.w, ly.attn_ln.b, eps);
            at::Tensor h = ly.inter.gelu(x, gelu_approx_);
            x = at::layer_norm(ly.out.add(h, x), {H}, ly.out_ln.w, ly.out_ln.b, eps);
        }
        return x.view({B, L, H});
    }

    // Attention runs on groups of consecutive (length-sorted) sequences of the packed batch,
    // padded to the group's longest with a key-padding mask: one SDPA call per group. (One
    // call per sequence was 2x (fp32) to 4x (bf16) slower than batched SDPA on this CPU;
    // padding here costs only attention, never the linears.) A group closes at
    // kAttnGroupMax sequences or when padding would exceed 1/8 of its tokens.
    struct AttnGroup {
        int64_t first_row = 0, tokens = 0;   // packed rows [first_row, first_row + tokens)
        int64_t count = 0, max_len = 0;      // sequences, longest (= padded length)
        // With padding: gather [count * max_len] = packed row of each padded row (a padding
        // row repeats its sequence's last token: finite values, masked as a key, its
        // output dropped), scatter [tokens] = padded row of each of the group's packed rows.
        at::Tensor gather, scatter;
        at::Tensor mask;                     // [count, 1, 1, max_len] bool, true = real key; undefined: no padding
    };
    static constexpr int64_t kAttnGroupMax = 16;

    static std::vector<AttnGroup> attention_groups(const std::vector<const std::vector<int32_t>*>& seqs,
                                                   const std::vector<int64_t>& offsets) {
        std::vector<AttnGroup> groups;
        size_t i = 0;
        while (i < seqs.size()) {
            AttnGroup g;
            g.first_row = offsets[i];
            size_t j = i;
            while (j < seqs.size() && g.count < kAttnGroupMax) {
                const int64_t len = static_cast<int64_t>(seqs[j]->size());
                const int64_t ml = std::max(g.max_len, len), tok = g.tokens + len;
                if (g.count > 0 && (g.count + 1) * ml * 7 > tok * 8) break;   // > 1/8 padding
                g.max_len = ml;
                g.tokens = tok;
                ++g.count;
                ++j;
            }
            if (g.count * g.max_len != g.tokens) {
                std::vector<int64_t> ga, sc;
                std::vector<uint8_t> mk(static_cast<size_t>(g.count * g.max_len), 0);
                for (int64_t b = 0; b < g.count; ++b) {
                    const size_t k = i + static_cast<size_t>(b);
                    const int64_t len = static_cast<int64_t>(seqs[k]->size());
                    for (int64_t c = 0; c < g.max_len; ++c) ga.push_back(offsets[k] + std::min(c, len - 1));
                    for (int64_t c = 0; c < len; ++c) sc.push_back(b * g.max_len + c);
                    std::fill_n(mk.begin() + b * g.max_len, len, uint8_t{1});
                }
                g.gather = at::from_blob(ga.data(), {g.count * g.max_len}, at::kLong).clone();
                g.scatter = at::from_blob(sc.data(), {g.tokens}, at::kLong).clone();
                g.mask = at::from_blob(mk.data(), {g.count, 1, 1, g.max_len}, at::kBool).clone();
            }
            groups.push_back(std::move(g));
            i = j;
        }
        return groups;
    }

    // Packed ("unpadded") forward of whole sequences: every linear, LayerNorm and GELU
    // runs on the T real tokens only ([T, H], no padding); attention runs per sequence.
    // seqs: ids incl. [CLS]/[SEP]. Returns last_hidden [T, H]; sequence i starts at
    // offsets[i].
    at::Tensor run_packed(const std::vector<const std::vector<int32_t>*>& seqs, std::vector<int64_t>& offsets) const {
        const int64_t H = cfg_.hidden_size, nh = cfg_.num_attention_heads, hd = H / nh;
        const double eps = cfg_.layer_norm_eps;
        std::vector<int64_t> ids, pos;
        offsets.clear();
        for (const auto* s : seqs) {
            offsets.push_back(static_cast<int64_t>(ids.size()));
            int64_t counted = 0;   // non-pad tokens so far (RoBERTa positions)
            for (size_t c = 0; c < s->size(); ++c) {
                int32_t id = (*s)[c];
                if (id < 0 || id >= cfg_.vocab_size)
                    throw UsageError(ErrorInfo{}.at("token id").expected("< " + std::to_string(cfg_.vocab_size))
                                         .found(std::to_string(id)));
                ids.push_back(id);
                if (!roberta_) pos.push_back(static_cast<int64_t>(c));
                else pos.push_back(id == pad_id_ ? pad_id_ : pad_id_ + (++counted));   // as run()
            }
        }
        const int64_t T = static_cast<int64_t>(ids.size());
        at::Tensor t_ids = at::from_blob(ids.data(), {T}, at::kLong);
        at::Tensor t_pos = at::from_blob(pos.data(), {T}, at::kLong);
        const std::vector<AttnGroup> groups = attention_groups(seqs, offsets);
        Timer tm(prof_on_);
        at::Tensor x = at::embedding(word_, t_ids).add_(at::embedding(pos_type_, t_pos));
        x = at::layer_norm(x, {H}, emb_ln_.w, emb_ln_.b, eps);
        tm.lap(prof_[0]);
        for (const auto& ly : layers_) {
            at::Tensor qkv = ly.qkv(x);   // [T, 3H]
            tm.lap(prof_[1]);
            at::Tensor a = at::empty({T, H}, x.options());   // attention output [T, H], packed like x
            for (const auto& g : groups) {
                const int64_t Bg = g.count, Lg = g.max_len;
                // [Bg * Lg, 3H]: one gather (few big ops: on a busy 2-core box every extra
                // parallel region waits for both threads to be scheduled)
                at::Tensor padded = g.mask.defined() ? qkv.index_select(0, g.gather) : qkv.narrow(0, g.first_row, g.tokens);
                tm.lap(prof_[7]);
                at::Tensor q = padded.view({Bg, Lg, 3, nh, hd}).permute({2, 0, 3, 1, 4});   // [3, Bg, nh, Lg, hd]
                std::optional<at::Tensor> m;
                if (g.mask.defined()) m = g.mask;
                at::Tensor o = at::scaled_dot_product_attention(q[0], q[1], q[2], m).transpose(1, 2).reshape({Bg * Lg, H});
                tm.lap(prof_[8]);
                at::Tensor dst = a.narrow(0, g.first_row, g.tokens);
                if (g.mask.defined()) at::index_select_out(dst, o, 0, g.scatter);
                else dst.copy_(o);
            }
            tm.lap(prof_[2]);
            x = at::layer_norm(ly.attn_out.add(a, x), {H}, ly.attn_ln.w, ly.attn_ln.b, eps);
            tm.lap(prof_[3]);
            at::Tensor h = ly.inter.gelu(x, gelu_approx_);   // [T, I]
            tm.lap(prof_[4]);
            x = at::layer_norm(ly.out.add(h, x), {H}, ly.out_ln.w, ly.out_ln.b, eps);
            tm.lap(prof_[5]);
        }
        return x;
    }

    static at::Tensor l2_normalize(const at::Tensor& v) {
        // v [B, H] fp32 -> v / max(||v||, 1e-12) (torch.nn.functional.normalize)
        std::vector<int64_t> dim{1};
        return v.div(at::linalg_vector_norm(v, 2, dim, true).clamp_min(1e-12));
    }

    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts) override {
        if (!tok_ && !xtok_)
            throw ConfigError(ErrorInfo{}.at("embedding model").msg(roberta_ ? "the model folder has no sentencepiece.bpe.model"
                                                                             : "the model folder has no vocab.txt or tokenizer.json"));
        std::vector<std::vector<int32_t>> ids(texts.size());
        Timer tm(prof_on_);
        for (size_t i = 0; i < texts.size(); ++i) {
            auto e = tok_ ? tok_->encode(texts[i], max_length_) : xtok_->encode(texts[i], max_length_);
            if (e.truncated()) ++stats_.truncated;
            ids[i] = std::move(e.ids);
        }
        tm.lap(prof_[6]);
        return embed_ids(ids);
    }

    std::vector<std::vector<float>> embed_ids(const std::vector<std::vector<int32_t>>& ids) override {
        c10::InferenceMode guard;
        const int64_t H = cfg_.hidden_size;
        std::vector<std::vector<float>> out(ids.size());
        // Longest first, so each batch pads to a similar length.
        std::vector<size_t> order(ids.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() > ids[b].size(); });
        // Batches of whole sequences up to max_batch_tokens real tokens (longest first).
        size_t i = 0;
        std::vector<int64_t> offsets;
        while (i < order.size()) {
            std::vector<const std::vector<int32_t>*> batch;
            size_t tokens = 0;
            while (i + batch.size() < order.size() && batch.size() < opt_.max_batch) {
                const auto& s = ids[order[i + batch.size()]];
                if (s.empty() || s.size() > max_length_ || s.size() > static_cast<size_t>(cfg_.max_position_embeddings - pos_offset_))
                    throw UsageError(ErrorInfo{}.at("embed_ids").expected("1.." + std::to_string(max_length_) + " ids")
                                         .found(std::to_string(s.size())));
                // packed: real tokens; padded: batch x longest (the first, sorted longest first)
                size_t cost = opt_.packed ? tokens + s.size() : (batch.size() + 1) * (batch.empty() ? s.size() : batch[0]->size());
                if (!batch.empty() && cost > opt_.max_batch_tokens) break;
                batch.push_back(&s);
                tokens += s.size();
            }
            at::Tensor cls;   // [B, H]
            if (opt_.packed) {
                at::Tensor h = run_packed(batch, offsets);   // [T, H]
                at::Tensor idx = at::from_blob(offsets.data(), {static_cast<int64_t>(offsets.size())}, at::kLong);
                cls = h.index_select(0, idx).to(at::kFloat);   // [CLS] rows only
                cls = (opt_.normalize ? l2_normalize(cls) : cls).contiguous();
            } else {
                const int64_t B = static_cast<int64_t>(batch.size()), L = static_cast<int64_t>(batch[0]->size());
                std::vector<int64_t> flat(static_cast<size_t>(B * L), tok_ ? tok_->pad_id() : cfg_.pad_token_id);
                std::vector<uint8_t> m(static_cast<size_t>(B * L), 0);
                bool padded = false;
                for (int64_t r = 0; r < B; ++r) {
                    const auto& sq = *batch[static_cast<size_t>(r)];
                    for (size_t c = 0; c < sq.size(); ++c) {
                        if (sq[c] < 0 || sq[c] >= cfg_.vocab_size)
                            throw UsageError(ErrorInfo{}.at("token id").expected("< " + std::to_string(cfg_.vocab_size))
                                                 .found(std::to_string(sq[c])));
                        flat[static_cast<size_t>(r * L) + c] = sq[c];
                        m[static_cast<size_t>(r * L) + c] = 1;
                    }
                    padded |= static_cast<int64_t>(sq.size()) < L;
                }
                at::Tensor t_ids = at::from_blob(flat.data(), {B, L}, at::kLong);
                at::Tensor t_mask;
                if (padded) t_mask = at::from_blob(m.data(), {B, L}, at::kBool);
                cls = run(t_ids, t_mask).select(1, 0).to(at::kFloat);
                cls = (opt_.normalize ? l2_normalize(cls) : cls).contiguous();
                stats_.padded_tokens += static_cast<size_t>(B * L) - tokens;
            }
            const float* p = cls.data_ptr<float>();
            for (size_t r = 0; r < batch.size(); ++r) out[order[i + r]].assign(p + r * H, p + (r + 1) * H);
            stats_.batches += 1;
            stats_.tokens += tokens;
            stats_.padded_tokens += tokens;
            stats_.texts += batch.size();
            i += batch.size();
        }
        if (prof_on_) {
            std::string m = "profile (s, cumulative):";
            for (size_t k = 0; k < 9; ++k) m += log::cat(" ", kProfNames[k], " ", prof_[k], ";");
            log::info("bert", m);
        }
        return out;
    }

    std::vector<float> forward(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask, int64_t batch, int64_t seq,
                               std::vector<float>* cls) override {
        if (ids.size() != static_cast<size_t>(batch * seq) || mask.size() != ids.size())
            throw ShapeError(ErrorInfo{}.at("BertEmbedder::forward").expected("batch x seq ids and mask"));
        c10::InferenceMode guard;
        at::Tensor t_ids = at::from_blob(const_cast<int64_t*>(ids.data()), {batch, seq}, at::kLong);
        at::Tensor t_mask = at::from_blob(const_cast<int64_t*>(mask.data()), {batch, seq}, at::kLong).ne(0);
        at::Tensor h = run(t_ids, t_mask).to(at::kFloat).contiguous();
        if (cls) {
            at::Tensor c = l2_normalize(h.select(1, 0)).contiguous();
            cls->assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
        }
        return std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel());
    }

    int64_t hidden_size() const override { return cfg_.hidden_size; }
    std::string dtype() const override { return dtype_name_; }
    size_t max_length() const override { return max_length_; }
    const tokenizer::WordPieceTokenizer* tokenizer() const override { return tok_ ? &*tok_ : nullptr; }
    const tokenizer::XlmrTokenizer* xlmr_tokenizer() const override { return xtok_ ? &*xtok_ : nullptr; }
    const BertEmbedStats& stats() const override { return stats_; }

private:
    BertEmbedOptions opt_;
    BertConfig cfg_;
    std::string gelu_approx_ = "none";
    c10::ScalarType dtype_ = c10::kFloat;
    std::string dtype_name_ = "fp32";
    std::optional<tokenizer::WordPieceTokenizer> tok_;    // BERT
    std::optional<tokenizer::XlmrTokenizer> xtok_;        // XLM-R (sentencepiece)
    bool roberta_ = false;
    int64_t pad_id_ = 0;        // RoBERTa padding_idx (config pad_token_id)
    int64_t pos_offset_ = 0;    // first position id: 0 (BERT) or padding_idx + 1 (RoBERTa)
    size_t max_length_ = 512;
    at::Tensor word_, pos_, type_, pos_type_;
    Norm emb_ln_;
    std::vector<Layer> layers_;
    BertEmbedStats stats_;
    bool prof_on_ = false;
    mutable double prof_[9] = {};   // seconds per kProfNames step
};

}  // namespace

std::unique_ptr<BertEmbedder> BertEmbedder::load(const std::string& model_dir, const BertEmbedOptions& options) {
    if (!fs::is_directory(model_dir))
        throw IoError(ErrorInfo{model_dir}.msg("not a model folder")
                          .expected("config.json + model.safetensors (+ vocab.txt or sentencepiece.bpe.model)"));
    return std::make_unique<BertEmbedderImpl>(model_dir, options);
}

}  // namespace pdsd::model
