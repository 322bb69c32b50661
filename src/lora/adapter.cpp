#include "pdsd/lora/adapter.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/core/version.h"
#include "pdsd/model/weights.h"

#include <ATen/ops/from_blob.h>
#include <ATen/ops/matmul.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

namespace fs = std::filesystem;
using nlohmann::json;

namespace pdsd::lora {

namespace {

const std::string kPrefix = "base_model.model.";

bool is_suffix_match(const std::string& module, const std::string& key) {
    if (module == key) return true;
    return module.size() > key.size() && module.compare(module.size() - key.size(), key.size(), key) == 0 &&
           module[module.size() - key.size() - 1] == '.';
}

// PEFT treats pattern keys as regular expressions; pdsd supports plain dotted names only.
bool looks_like_regex(const std::string& s) {
    return s.find_first_of("*+?()[]{}|^$\\") != std::string::npos;
}

template <typename T>
const T* pattern_lookup(const std::map<std::string, T>& pattern, const std::string& module) {
    // The longest matching key wins, so "layers.0.self_attn.q_proj" beats "q_proj".
    const T* best = nullptr;
    size_t best_len = 0;
    for (const auto& [k, v] : pattern) {
        if (is_suffix_match(module, k) && k.size() >= best_len) {
            best = &v;
            best_len = k.size();
        }
    }
    return best;
}

ConfigError refuse(const std::string& source, const std::string& key, const std::string& found,
                   const std::string& hint) {
    return ConfigError(ErrorInfo{source}.at("key '" + key + "'").msg("unsupported adapter setting")
                           .expected("a plain LoRA adapter").found(found).hint(hint));
}

}  // namespace

int64_t AdapterConfig::rank_for(const std::string& module) const {
    const int64_t* p = pattern_lookup(rank_pattern, module);
    return p ? *p : r;
}

double AdapterConfig::alpha_for(const std::string& module) const {
    const double* p = pattern_lookup(alpha_pattern, module);
    return p ? *p : lora_alpha;
}

double AdapterConfig::scale_for(const std::string& module) const {
    double rank = static_cast<double>(rank_for(module));
    double alpha = alpha_for(module);
    return use_rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

at::Tensor LoraModule::delta(bool fan_in_fan_out) const {
    // Same order of operations as PEFT's get_delta_weight: (B @ A) * scaling, in float32.
    at::Tensor d = at::matmul(B.to(at::kFloat), A.to(at::kFloat)).mul_(scale);
    return fan_in_fan_out ? d.t().contiguous() : d;
}

const LoraModule* Adapter::find(const std::string& module) const {
    auto it = std::lower_bound(modules.begin(), modules.end(), module,
                               [](const LoraModule& m, const std::string& n) { return m.name < n; });
    return (it != modules.end() && it->name == module) ? &*it : nullptr;
}

bool Adapter::all_B_zero() const {
    for (const auto& m : modules) {
        if (m.B.defined() && m.B.abs().max().item<float>() != 0.0f) return false;
    }
    return true;
}

std::string peft_tensor_name(const std::string& module, char which) {
    return kPrefix + module + (which == 'A' ? ".lora_A.weight" : ".lora_B.weight");
}

AdapterConfig parse_adapter_config(const json& j, const std::string& source) {
    if (!j.is_object()) {
        throw FormatError(ErrorInfo{source}.expected("a JSON object").found(j.type_name()));
    }
    AdapterConfig c;
    auto get = [&](const char* key) -> const json* {
        auto it = j.find(key);
        return (it == j.end() || it->is_null()) ? nullptr : &*it;
    };
    auto number = [&](const char* key, double dflt) -> double {
        const json* v = get(key);
        if (!v) return dflt;
        if (!v->is_number()) throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected("a number").found(v->dump()));
        return v->get<double>();
    };
    auto boolean = [&](const char* key, bool dflt) -> bool {
        const json* v = get(key);
        if (!v) return dflt;
        if (!v->is_boolean()) throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected("true or false").found(v->dump()));
        return v->get<bool>();
    };

    if (const json* v = get("peft_type"); v && (!v->is_string() || v->get<std::string>() != "LORA")) {
        throw refuse(source, "peft_type", v->dump(), "pdsd reads LoRA adapters only (peft_type \"LORA\")");
    }
    double r = number("r", 8);
    if (r < 1 || r != std::floor(r)) {
        throw ConfigError(ErrorInfo{source}.at("key 'r'").expected("a positive integer").found(j["r"].dump()));
    }
    c.r = static_cast<int64_t>(r);
    c.lora_alpha = number("lora_alpha", 8);  // PEFT's LoraConfig default
    c.lora_dropout = number("lora_dropout", 0.0);
    c.use_rslora = boolean("use_rslora", false);
    c.fan_in_fan_out = boolean("fan_in_fan_out", false);

    if (const json* v = get("target_modules")) {
        if (v->is_string()) {
            throw refuse(source, "target_modules", v->dump(),
                         "a string target_modules is a PEFT regular expression, which pdsd does not evaluate; "
                         "list the module names instead, e.g. [\"q_proj\", \"v_proj\"]");
        }
        if (!v->is_array()) throw ConfigError(ErrorInfo{source}.at("key 'target_modules'").expected("a list of module names").found(v->dump()));
        for (const auto& m : *v) {
            if (!m.is_string()) throw ConfigError(ErrorInfo{source}.at("key 'target_modules'").expected("strings").found(m.dump()));
            c.target_modules.push_back(m.get<std::string>());
        }
        std::sort(c.target_modules.begin(), c.target_modules.end());
    }
    if (const json* v = get("modules_to_save"); v && !(v->is_array() && v->empty())) {
        throw refuse(source, "modules_to_save", v->dump(),
                     "this adapter also carries full copies of some layers (modules_to_save), which pdsd does not "
                     "merge; merge it with PEFT's merge_and_unload, or train without modules_to_save");
    }
    if (boolean("use_dora", false)) {
        throw refuse(source, "use_dora", "true", "DoRA adapters need a magnitude-normalised merge that pdsd does not implement");
    }
    if (const json* v = get("bias"); v && (!v->is_string() || v->get<std::string>() != "none")) {
        throw refuse(source, "bias", v->dump(), "only bias \"none\" is supported (the adapter would carry bias tensors)");
    }
    if (boolean("lora_bias", false)) {
        throw refuse(source, "lora_bias", "true", "lora_B bias tensors are not supported");
    }
    for (const char* key : {"layers_to_transform", "layer_replication", "target_parameters", "trainable_token_indices"}) {
        if (const json* v = get(key); v && !(v->is_array() && v->empty()) && !(v->is_object() && v->empty())) {
            throw refuse(source, key, v->dump(), "pdsd supports adapters on whole Linear modules only");
        }
    }
    if (const json* v = get("rank_pattern")) {
        if (!v->is_object()) throw ConfigError(ErrorInfo{source}.at("key 'rank_pattern'").expected("an object").found(v->dump()));
        for (const auto& [k, val] : v->items()) {
            if (looks_like_regex(k)) throw refuse(source, "rank_pattern", k, "use plain module names as keys");
            if (!val.is_number_integer() || val.get<int64_t>() < 1) throw ConfigError(ErrorInfo{source}.at("rank_pattern['" + k + "']").expected("a positive integer").found(val.dump()));
            c.rank_pattern[k] = val.get<int64_t>();
        }
    }
    if (const json* v = get("alpha_pattern")) {
        if (!v->is_object()) throw ConfigError(ErrorInfo{source}.at("key 'alpha_pattern'").expected("an object").found(v->dump()));
        for (const auto& [k, val] : v->items()) {
            if (looks_like_regex(k)) throw refuse(source, "alpha_pattern", k, "use plain module names as keys");
            if (!val.is_number()) throw ConfigError(ErrorInfo{source}.at("alpha_pattern['" + k + "']").expected("a number").found(val.dump()));
            c.alpha_pattern[k] = val.get<double>();
        }
    }
    if (const json* v = get("base_model_name_or_path"); v && v->is_string()) c.base_model_name_or_path = v->get<std::string>();
    if (const json* v = get("task_type"); v && v->is_string()) c.task_type = v->get<std::string>();
    if (const json* v = get("peft_version"); v && v->is_string()) c.peft_version = v->get<std::string>();
    return c;
}

AdapterConfig read_adapter_config(const std::string& path) {
    return parse_adapter_config(read_json_file(path), path);
}

Adapter load_adapter(const std::string& dir) {
    fs::path root(dir);
    if (!fs::is_directory(root)) {
        throw IoError(ErrorInfo{dir}.msg("adapter folder not found")
                          .hint("adapter_name_or_path must be a local folder holding adapter_config.json "
                                "and adapter_model.safetensors"));
    }
    std::string cfg_path = (root / "adapter_config.json").string();
    std::string st_path = (root / "adapter_model.safetensors").string();
    if (!fs::exists(cfg_path)) {
        throw IoError(ErrorInfo{dir}.msg("no adapter_config.json")
                          .hint("is this a LoRA adapter folder (PEFT save_pretrained / checkpoint-N)?"));
    }
    if (!fs::exists(st_path)) {
        std::string hint = fs::exists(root / "adapter_model.bin")
                               ? "adapter_model.bin (pickle) is not read; re-save the adapter with safe_serialization=True"
                               : "the folder has no adapter_model.safetensors";
        throw IoError(ErrorInfo{dir}.msg("no adapter_model.safetensors").hint(hint));
    }
    Adapter a;
    a.path = dir;
    a.config = read_adapter_config(cfg_path);

    SafetensorsFile file(st_path);
    std::map<std::string, std::pair<at::Tensor, at::Tensor>> pairs;  // module -> (A, B)
    for (const auto& t : file.tensors()) {
        const std::string& n = t.name;
        auto bad = [&](const std::string& what, const std::string& hint) {
            return FormatError(ErrorInfo{st_path}.at("tensor '" + n + "'").msg(what).hint(hint));
        };
        if (n.rfind(kPrefix, 0) != 0) {
            throw bad("not a PEFT LoRA tensor name", "expected names starting with 'base_model.model.'");
        }
        std::string rest = n.substr(kPrefix.size());
        char which = 0;
        std::string module;
        for (const char* w : {"A", "B"}) {
            for (const char* suffix : {".weight", ".default.weight"}) {
                std::string s = std::string(".lora_") + w + suffix;
                if (rest.size() > s.size() && rest.compare(rest.size() - s.size(), s.size(), s) == 0) {
                    which = *w;
                    module = rest.substr(0, rest.size() - s.size());
                }
            }
        }
        if (!which) {
            std::string hint = "pdsd merges lora_A/lora_B weights only";
            if (n.find("lora_embedding") != std::string::npos) hint = "LoRA on embeddings is not supported";
            if (n.find("lora_magnitude") != std::string::npos) hint = "DoRA adapters are not supported";
            if (n.find("modules_to_save") != std::string::npos || n.find("original_module") != std::string::npos)
                hint = "modules_to_save weights are not supported";
            throw bad("unsupported adapter tensor", hint);
        }
        if (t.shape.size() != 2) {
            throw ShapeError(ErrorInfo{st_path}.at("tensor '" + n + "'").expected("2 dimensions").found(std::to_string(t.shape.size())));
        }
        auto& slot = which == 'A' ? pairs[module].first : pairs[module].second;
        if (slot.defined()) throw bad("appears twice (with and without '.default')", "keep one spelling");
        at::Tensor view = at::from_blob(const_cast<uint8_t*>(file.data(t)), t.shape,
                                        at::TensorOptions().dtype(model::to_scalar_type(t.dtype)));
        slot = view.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);  // owned float32 copy
    }
    if (pairs.empty()) {
        throw FormatError(ErrorInfo{st_path}.msg("the adapter holds no lora_A/lora_B tensors"));
    }
    for (auto& [module, ab] : pairs) {
        auto& [A, B] = ab;
        if (!A.defined() || !B.defined()) {
            throw FormatError(ErrorInfo{st_path}.at("module '" + module + "'")
                                  .expected("both lora_A and lora_B").found(A.defined() ? "lora_A only" : "lora_B only"));
        }
        if (A.size(0) != B.size(1)) {
            throw ShapeError(ErrorInfo{st_path}.at("module '" + module + "'")
                                 .expected("lora_A [r, in] and lora_B [out, r] with the same r")
                                 .found("A " + std::to_string(A.size(0)) + "x" + std::to_string(A.size(1)) + ", B " +
                                        std::to_string(B.size(0)) + "x" + std::to_string(B.size(1))));
        }
        int64_t r = a.config.rank_for(module);
        if (A.size(0) != r) {
            throw ShapeError(ErrorInfo{st_path}.at("module '" + module + "'")
                                 .expected("rank " + std::to_string(r) + " (adapter_config.json r / rank_pattern)")
                                 .found("rank " + std::to_string(A.size(0)))
                                 .hint("the config and the weights come from different adapters?"));
        }
        if (!a.config.target_modules.empty()) {
            bool targeted = std::any_of(a.config.target_modules.begin(), a.config.target_modules.end(),
                                        [&](const std::string& t) { return is_suffix_match(module, t); });
            if (!targeted) {
                log::warn("lora", log::cat(st_path, ": module '", module, "' is not in target_modules; merged anyway"));
            }
        }
        a.modules.push_back({module, A, B, a.config.scale_for(module)});
    }
    return a;  // std::map iteration: modules sorted by name
}

json adapter_config_json(const AdapterConfig& c) {
    // The keys and defaults PEFT 0.21 writes for a plain LoRA (tiny-qwen2-lora-step1 fixture).
    json j;
    j["alora_invocation_tokens"] = nullptr;
    j["alpha_pattern"] = c.alpha_pattern.empty() ? json::object() : json(c.alpha_pattern);
    j["arrow_config"] = nullptr;
    j["auto_mapping"] = nullptr;
    j["base_model_name_or_path"] = c.base_model_name_or_path;
    j["bias"] = "none";
    j["corda_config"] = nullptr;
    j["ensure_weight_tying"] = false;
    j["eva_config"] = nullptr;
    j["exclude_modules"] = nullptr;
    j["fan_in_fan_out"] = c.fan_in_fan_out;
    j["inference_mode"] = true;
    j["init_lora_weights"] = true;
    j["layer_replication"] = nullptr;
    j["layers_pattern"] = nullptr;
    j["layers_to_transform"] = nullptr;
    j["loftq_config"] = json::object();
    if (c.lora_alpha == std::floor(c.lora_alpha)) {
        j["lora_alpha"] = static_cast<int64_t>(c.lora_alpha);
    } else {
        j["lora_alpha"] = c.lora_alpha;
    }
    j["lora_bias"] = false;
    j["lora_dropout"] = c.lora_dropout;
    j["megatron_config"] = nullptr;
    j["megatron_core"] = "megatron.core";
    j["modules_to_save"] = nullptr;
    j["peft_type"] = "LORA";
    j["peft_version"] = c.peft_version.empty() ? std::string("pdsd ") + PDSD_VERSION : c.peft_version;
    j["qalora_group_size"] = 16;
    j["r"] = c.r;
    j["rank_pattern"] = c.rank_pattern.empty() ? json::object() : json(c.rank_pattern);
    j["revision"] = nullptr;
    j["target_modules"] = c.target_modules;
    j["target_parameters"] = nullptr;
    j["task_type"] = c.task_type;
    j["trainable_token_indices"] = nullptr;
    j["use_dora"] = false;
    j["use_qalora"] = false;
    j["use_rslora"] = c.use_rslora;
    return j;
}

void save_adapter(const std::string& dir, const Adapter& adapter, c10::ScalarType dtype) {
    if (adapter.modules.empty()) {
        throw InternalError("save_adapter: the adapter has no modules");
    }
    fs::create_directories(dir);
    AdapterConfig cfg = adapter.config;
    if (cfg.target_modules.empty()) {
        std::set<std::string> leaf;
        for (const auto& m : adapter.modules) leaf.insert(m.name.substr(m.name.rfind('.') + 1));
        cfg.target_modules.assign(leaf.begin(), leaf.end());
    }
    std::vector<at::Tensor> keep(adapter.modules.size() * 2);
    std::vector<TensorView> views;
    std::vector<const LoraModule*> sorted;
    for (const auto& m : adapter.modules) sorted.push_back(&m);
    std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->name < y->name; });
    for (size_t i = 0; i < sorted.size(); ++i) {
        const LoraModule& m = *sorted[i];
        if (!m.A.defined() || !m.B.defined() || m.A.dim() != 2 || m.B.dim() != 2 || m.A.size(0) != m.B.size(1)) {
            throw ShapeError(ErrorInfo{dir}.at("module '" + m.name + "'").expected("A [r, in] and B [out, r]"));
        }
        views.push_back(model::tensor_view(peft_tensor_name(m.name, 'A'), m.A.detach().to(at::kCPU).to(dtype), keep[2 * i]));
        views.push_back(model::tensor_view(peft_tensor_name(m.name, 'B'), m.B.detach().to(at::kCPU).to(dtype), keep[2 * i + 1]));
    }
    write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), views, {{"format", "pt"}});
    write_file_atomic((fs::path(dir) / "adapter_config.json").string(), adapter_config_json(cfg).dump(2) + "\n");
}

}  // namespace pdsd::lora
