// LoRA / freeze / full trainable sets; see trainable.h.
#include "pdsd/train/trainable.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_folder.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/lora/inject.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

namespace fs = std::filesystem;

namespace pdsd::train {

namespace {

constexpr const char* kComp = "train";
constexpr uint64_t kShardBytes = 5000000000ULL;  // HF save_pretrained's max_shard_size "5GB"

// Layer index of "model.layers.<i>.<...>", or -1.
int64_t layer_of(const std::string& name) {
    static const std::regex re("model\\.layers\\.([0-9]+)\\.");
    std::smatch m;
    if (!std::regex_search(name, m, re)) return -1;
    return std::stoll(m[1].str());
}

// "model.layers.3.self_attn.q_proj.weight" -> "self_attn" (LF's hidden_modules), "" outside layers.
std::string layer_module_of(const std::string& name) {
    static const std::regex re("model\\.layers\\.[0-9]+\\.([^.]+)\\.");
    std::smatch m;
    return std::regex_search(name, m, re) ? m[1].str() : std::string();
}

// "model.embed_tokens.weight" -> "embed_tokens", "lm_head.weight" -> "lm_head" (LF's
// non_hidden_modules: the component before weight/bias).
std::string outer_module_of(const std::string& name) {
    const auto last = name.rfind('.');
    if (last == std::string::npos) return name;
    const auto prev = name.rfind('.', last - 1);
    return name.substr(prev == std::string::npos ? 0 : prev + 1, last - (prev == std::string::npos ? 0 : prev + 1));
}

std::string joined(const std::set<std::string>& s) {
    std::string r;
    for (const auto& x : s) r += (r.empty() ? "" : ", ") + x;
    return r;
}

// The names a saved model folder holds: the checkpoint's, without a tied lm_head.weight
// (save_pretrained drops tied weights; pdsd's loader and HF ignore it anyway).
std::vector<std::string> saved_names(const Checkpoint& ck, bool tied) {
    std::vector<std::string> out;
    for (auto& n : ck.names()) {
        if (tied && n == "lm_head.weight") continue;
        out.push_back(n);
    }
    return out;
}

int64_t lora_param_count(const Qwen2Config& c, const std::vector<std::string>& targets, int64_t r) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim(), kv = c.num_key_value_heads * c.head_dim(),
                  I = c.intermediate_size;
    int64_t per_layer = 0;
    for (const auto& t : targets) {
        if (t == "q_proj") per_layer += r * (h + q);
        if (t == "k_proj" || t == "v_proj") per_layer += r * (h + kv);
        if (t == "o_proj") per_layer += r * (q + h);
        if (t == "gate_proj" || t == "up_proj" || t == "down_proj") per_layer += r * (h + I);
    }
    return per_layer * c.num_hidden_layers;
}

int64_t base_param_count(const Qwen2Config& c) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim(), kv = c.num_key_value_heads * c.head_dim(),
                  I = c.intermediate_size;
    int64_t layer = h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * I + 2 * h;
    return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + h;
}

// ---- LoRA -----------------------------------------------------------------------------------

class LoraTrainable final : public Trainable {
public:
    LoraTrainable(const LfArgs& a, model::Qwen2ForCausalLMImpl& net, c10::ScalarType compute, const c10::Device& dev)
        : base_name_(a.model.model_name_or_path), n_layers_(static_cast<int64_t>(net.model->layers.size())),
          dropout_(a.finetuning.lora_dropout > 0) {
        const auto& f = a.finetuning;
        lora::LoraHyper hyper{f.lora_rank, static_cast<double>(f.lora_alpha()), f.lora_dropout, f.use_rslora};
        att_ = lora::attach_lora(net, hyper, lora::resolve_lora_targets(f.lora_target),
                                 at::TensorOptions().dtype(at::kFloat).device(dev));
        if (compute != c10::kFloat) {
            for (auto& layer : att_.layers) layer->autocast = true;  // bf16 matmuls, fp32 master weights
        }
        if (!a.model.adapter_name_or_path.empty()) {
            if (a.model.adapter_name_or_path.size() > 1) {
                throw ConfigError(ErrorInfo{}.at("adapter_name_or_path").expected("one adapter to continue training")
                                      .hint("merge the others first (pdsd export)"));
            }
            att_.load(lora::load_adapter(a.model.adapter_name_or_path[0]));
            log::info(kComp, "continuing training of adapter " + a.model.adapter_name_or_path[0]);
        }
        params_ = att_.parameters();
        names_ = att_.parameter_names();
    }

    std::vector<std::vector<at::Tensor>> layer_parameters() const override {
        std::vector<std::vector<at::Tensor>> lp(static_cast<size_t>(n_layers_));
        for (size_t k = 0; k < att_.modules.size(); ++k) {
            const int64_t l = layer_of(att_.modules[k]);
            if (l < 0) continue;
            auto& v = lp.at(static_cast<size_t>(l));
            v.push_back(att_.layers[k]->lora_A->weight);
            v.push_back(att_.layers[k]->lora_B->weight);
        }
        return lp;
    }
    bool uses_rng() const override { return dropout_; }
    void save(const std::string& dir) const override { lora::save_adapter(dir, att_.to_adapter(base_name_)); }
    void load(const std::string& dir) override { att_.load(lora::load_adapter(dir)); }
    bool output_exists(const std::string& dir) const override { return fs::exists(fs::path(dir) / "adapter_model.safetensors"); }
    std::string output_kind() const override { return "adapter"; }

private:
    lora::LoraAttachment att_;
    std::string base_name_;
    int64_t n_layers_;
    bool dropout_;
};

// ---- freeze / full: base weights ---------------------------------------------------------------

class WeightsTrainable final : public Trainable {
public:
    WeightsTrainable(model::Qwen2ForCausalLMImpl& net, const std::string& base_dir, const std::function<bool(const std::string&)>& sel,
                     c10::ScalarType compute, bool pure_bf16, bool tied)
        : base_dir_(base_dir), base_(std::make_shared<Checkpoint>(Checkpoint::open(base_dir))), tied_(tied),
          n_layers_(static_cast<int64_t>(net.model->layers.size())) {
        master_ = compute != c10::kFloat && !pure_bf16;
        at::NoGradGuard ng;
        for (const auto& item : net.named_parameters(/*recurse=*/true)) {
            at::Tensor p = item.value();
            if (!sel(item.key())) {
                p.requires_grad_(false);
                continue;
            }
            // Own memory (the loader may have mapped the file): AdamW updates it in place.
            p.set_data(p.detach().clone());
            p.requires_grad_(true);
            model_.push_back(p);
            params_.push_back(master_ ? p.detach().to(at::kFloat).clone() : p);
            names_.push_back(item.key());
            index_[item.key()] = params_.size() - 1;
        }
        if (params_.empty()) {
            throw ConfigError(ErrorInfo{}.at("finetuning_type freeze").msg("selects no parameter to train")
                                  .hint("check freeze_trainable_layers / freeze_trainable_modules / freeze_extra_modules"));
        }
    }

    std::vector<std::vector<at::Tensor>> layer_parameters() const override {
        std::vector<std::vector<at::Tensor>> lp(static_cast<size_t>(n_layers_));
        for (size_t i = 0; i < names_.size(); ++i) {
            const int64_t l = layer_of(names_[i]);
            if (l >= 0 && l < n_layers_) lp[static_cast<size_t>(l)].push_back(model_[i]);
        }
        return lp;
    }

    void gradients_to_master() override {
        if (!master_) return;
        for (size_t i = 0; i < model_.size(); ++i) {
            at::Tensor g = model_[i].grad();
            if (!g.defined()) continue;
            params_[i].mutable_grad() = g.to(at::kFloat);
            model_[i].mutable_grad() = at::Tensor();
        }
    }
    void master_to_model() override {
        if (!master_) return;
        at::NoGradGuard ng;
        for (size_t i = 0; i < model_.size(); ++i) model_[i].copy_(params_[i]);
    }

    void save(const std::string& dir) const override {
        const std::vector<std::string> names = saved_names(*base_, tied_);
        std::vector<TensorView> specs;
        for (const auto& n : names) {
            TensorView s;
            s.name = n;
            auto it = index_.find(n);
            if (it != index_.end()) {
                const at::Tensor& p = params_[it->second];
                s.dtype = model::from_scalar_type(p.scalar_type());
                s.shape.assign(p.sizes().begin(), p.sizes().end());
                s.nbytes = static_cast<uint64_t>(p.numel()) * dtype_size(s.dtype);
            } else {
                const TensorInfo& ti = base_->info(n);
                s.dtype = ti.dtype;
                s.shape = ti.shape;
                s.nbytes = ti.nbytes();
            }
            specs.push_back(s);
        }
        at::Tensor live;
        auto produce = [&](size_t i) -> TensorView {
            const std::string& n = names[i];
            auto it = index_.find(n);
            if (it == index_.end()) {  // frozen: the stored bytes, untouched
                const TensorInfo& ti = base_->info(n);
                return TensorView{n, ti.dtype, ti.shape, base_->data(n), ti.nbytes()};
            }
            at::Tensor keep;
            live = params_[it->second].detach().to(at::kCPU).contiguous();
            TensorView v = model::tensor_view(n, live, keep);
            if (keep.defined()) live = keep;
            return v;
        };
        write_hf_model_folder(dir, specs, produce, kShardBytes, base_dir_, {fs::path(base_dir_)}, hf_majority_dtype(specs));
    }

    void load(const std::string& dir) override {
        Checkpoint ck = Checkpoint::open(dir);
        at::NoGradGuard ng;
        for (size_t i = 0; i < names_.size(); ++i) {
            if (!ck.contains(names_[i])) {
                throw FormatError(ErrorInfo{ck.source()}.at(names_[i]).msg("trained tensor missing from the checkpoint")
                                      .hint("was it written with other freeze_* keys? use a new output_dir"));
            }
            at::Tensor t = model::checkpoint_tensor(ck, names_[i]);
            if (t.sizes() != params_[i].sizes()) {
                throw ShapeError(ErrorInfo{ck.source()}.at(names_[i]).msg("shape differs from the model's"));
            }
            params_[i].copy_(t);
        }
        if (master_) master_to_model();
    }

    bool output_exists(const std::string& dir) const override {
        return fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json");
    }
    std::string output_kind() const override { return "model"; }

private:
    std::string base_dir_;
    std::shared_ptr<Checkpoint> base_;  // frozen tensors are written from its mapping
    bool tied_;
    int64_t n_layers_;
    bool master_ = false;
    std::vector<at::Tensor> model_;  // the model's parameters, same order as params_
    std::map<std::string, size_t> index_;
};

}  // namespace

int64_t Trainable::num_parameters() const {
    int64_t n = 0;
    for (const auto& p : params_) n += p.numel();
    return n;
}

std::function<bool(const std::string&)> weight_selector(const LfFinetuningArgs& f, const Qwen2Config& cfg,
                                                        const std::vector<std::string>& names) {
    if (f.finetuning_type == "full") return [](const std::string&) { return true; };
    const int64_t L = cfg.num_hidden_layers, n = f.freeze_trainable_layers;
    if (n == 0) {
        throw ConfigError(ErrorInfo{}.at("freeze_trainable_layers").expected("N > 0 (the last N layers) or -N (the first N)").found("0"));
    }
    if (std::abs(n) > L) {
        log::warn(kComp, log::cat("freeze_trainable_layers ", n, ": the model has ", L, " layers; training all of them"));
    }
    const int64_t first = n > 0 ? std::max<int64_t>(0, L - n) : 0, last = n > 0 ? L : std::min(-n, L);  // [first, last)
    std::set<std::string> hidden, outer;
    for (const auto& name : names) {
        const std::string m = layer_module_of(name);
        if (!m.empty()) hidden.insert(m);
        else if (layer_of(name) < 0) outer.insert(outer_module_of(name));
    }
    bool all = false;
    std::set<std::string> mods;
    for (const auto& m : f.freeze_trainable_modules) {
        if (m == "all") {
            all = true;
            continue;
        }
        if (!hidden.count(m)) {
            throw ConfigError(ErrorInfo{}.at("freeze_trainable_modules").expected("all, or of: " + joined(hidden)).found("'" + m + "'"));
        }
        mods.insert(m);
    }
    std::set<std::string> extra;
    for (const auto& m : f.freeze_extra_modules) {
        if (!outer.count(m)) {
            throw ConfigError(ErrorInfo{}.at("freeze_extra_modules").expected("one of: " + joined(outer)).found("'" + m + "'"));
        }
        extra.insert(m);
    }
    return [=](const std::string& name) {
        const int64_t l = layer_of(name);
        if (l < 0) return extra.count(outer_module_of(name)) > 0;
        return l >= first && l < last && (all || mods.count(layer_module_of(name)) > 0);
    };
}

std::unique_ptr<Trainable> make_trainable(const LfArgs& a, model::Qwen2ForCausalLMImpl& net, const std::string& base_dir,
                                          c10::ScalarType compute, const c10::Device& dev) {
    const std::string& type = a.finetuning.finetuning_type;
    if (type == "lora") return std::make_unique<LoraTrainable>(a, net, compute, dev);
    if (!a.model.adapter_name_or_path.empty()) {
        throw ConfigError(ErrorInfo{}.at("adapter_name_or_path").msg("is only valid with finetuning_type lora")
                              .found("finetuning_type " + type).hint("merge the adapter first (pdsd export), then train the merged model"));
    }
    std::vector<std::string> names;
    for (const auto& item : net.named_parameters(true)) names.push_back(item.key());
    const bool tied = !net.lm_head;
    return std::make_unique<WeightsTrainable>(net, base_dir, weight_selector(a.finetuning, net.config(), names), compute,
                                              a.finetuning.pure_bf16, tied);
}

int64_t projection_params(const Qwen2Config& c) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim(), kv = c.num_key_value_heads * c.head_dim(),
                  I = c.intermediate_size;
    return c.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * I);
}

ParamCount count_parameters(const LfArgs& a, const Qwen2Config& cfg, const std::string& base_dir) {
    ParamCount c;
    if (a.finetuning.finetuning_type == "lora") {
        c.trainable = lora_param_count(cfg, lora::resolve_lora_targets(a.finetuning.lora_target), a.finetuning.lora_rank);
        c.total = base_param_count(cfg) + c.trainable;
        return c;
    }
    Checkpoint ck = Checkpoint::open(base_dir);
    const std::vector<std::string> names = saved_names(ck, cfg.tie_word_embeddings);
    auto sel = weight_selector(a.finetuning, cfg, names);
    for (const auto& n : names) {
        const auto k = static_cast<int64_t>(ck.info(n).numel());
        c.total += k;
        if (sel(n)) c.trainable += k;
    }
    return c;
}

}  // namespace pdsd::train
