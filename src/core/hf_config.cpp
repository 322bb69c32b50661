#include "pdsd/core/hf_config.h"

#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"

#include <algorithm>
#include <filesystem>

namespace pdsd {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Typed field readers: absent or null keys leave the default; a wrong type is an error.
template <typename T>
void read_field(const json& j, const char* key, T& out, const std::string& source) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    bool ok;
    const char* expected;
    if constexpr (std::is_same_v<T, bool>) {
        ok = it->is_boolean(), expected = "a boolean";
    } else if constexpr (std::is_same_v<T, std::string>) {
        ok = it->is_string(), expected = "a string";
    } else if constexpr (std::is_same_v<T, int64_t>) {
        ok = it->is_number_integer(), expected = "an integer";
    } else {
        ok = it->is_number(), expected = "a number";
    }
    if (!ok) throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected(expected).found(it->dump()));
    out = it->get<T>();
}

template <typename T>
void read_opt(const json& j, const char* key, std::optional<T>& out, const std::string& source) {
    if (j.contains(key) && !j.at(key).is_null()) {
        T v{};
        read_field(j, key, v, source);
        out = v;
    }
}

// eos_token_id is an int or a list of ints.
std::vector<int64_t> read_id_list(const json& j, const char* key, const std::string& source) {
    std::vector<int64_t> out;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return out;
    if (it->is_number_integer()) {
        out.push_back(it->get<int64_t>());
    } else if (it->is_array()) {
        for (const auto& v : *it) {
            if (!v.is_number_integer()) {
                throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected("integer token ids").found(it->dump()));
            }
            out.push_back(v.get<int64_t>());
        }
    } else {
        throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected("an id or a list of ids").found(it->dump()));
    }
    return out;
}

void require_positive(int64_t v, const char* key, const std::string& source) {
    if (v <= 0) throw ConfigError(ErrorInfo{source}.at(std::string("key '") + key + "'").expected("a positive integer").found(std::to_string(v)));
}

std::string config_path(const std::string& dir_or_file, const char* name) {
    fs::path p(dir_or_file);
    if (fs::is_directory(p)) p /= name;
    if (!fs::exists(p)) {
        throw IoError(ErrorInfo{p.string()}.msg("file not found")
                          .hint(std::string("a Hugging Face model folder needs ") + name));
    }
    return p.string();
}

}  // namespace

Qwen2Config parse_qwen2_config(const json& j, const std::string& source) {
    if (!j.is_object()) throw ConfigError(ErrorInfo{source}.expected("a JSON object").found(j.type_name()));
    Qwen2Config c;
    std::string model_type;
    read_field(j, "model_type", model_type, source);
    if (!model_type.empty() && model_type != "qwen2") {
        throw ConfigError(ErrorInfo{source}.at("key 'model_type'").expected("\"qwen2\"").found("\"" + model_type + "\"")
                              .hint("pdsd runs Qwen2/Qwen2.5 checkpoints (Qwen2ForCausalLM)"));
    }
    read_field(j, "vocab_size", c.vocab_size, source);
    read_field(j, "hidden_size", c.hidden_size, source);
    read_field(j, "intermediate_size", c.intermediate_size, source);
    read_field(j, "num_hidden_layers", c.num_hidden_layers, source);
    read_field(j, "num_attention_heads", c.num_attention_heads, source);
    c.num_key_value_heads = c.num_attention_heads;  // HF default when the key is absent
    read_field(j, "num_key_value_heads", c.num_key_value_heads, source);
    read_field(j, "max_position_embeddings", c.max_position_embeddings, source);
    read_field(j, "rms_norm_eps", c.rms_norm_eps, source);
    read_field(j, "tie_word_embeddings", c.tie_word_embeddings, source);
    read_field(j, "hidden_act", c.hidden_act, source);
    // rope_theta: top level (transformers <= 4.x), or inside rope_parameters / rope_scaling (5.x).
    read_field(j, "rope_theta", c.rope_theta, source);
    for (const char* nested : {"rope_scaling", "rope_parameters"}) {
        auto it = j.find(nested);
        if (it == j.end() || !it->is_object()) continue;
        read_field(*it, "rope_theta", c.rope_theta, source);
        std::string rope_type = "default";
        read_field(*it, "rope_type", rope_type, source);
        if (rope_type.empty()) read_field(*it, "type", rope_type, source);
        if (rope_type != "default") {
            throw ConfigError(ErrorInfo{source}.at(std::string("key '") + nested + ".rope_type'")
                                  .expected("\"default\"").found("\"" + rope_type + "\"")
                                  .hint("scaled RoPE (YaRN, dynamic NTK) is not supported yet"));
        }
    }
    // dtype: torch_dtype (<= 4.x) or dtype (5.x).
    read_field(j, "torch_dtype", c.torch_dtype, source);
    read_field(j, "dtype", c.torch_dtype, source);
    read_opt(j, "bos_token_id", c.bos_token_id, source);
    c.eos_token_id = read_id_list(j, "eos_token_id", source);
    read_field(j, "pdsd_random_weights", c.pdsd_random_weights, source);

    require_positive(c.vocab_size, "vocab_size", source);
    require_positive(c.hidden_size, "hidden_size", source);
    require_positive(c.intermediate_size, "intermediate_size", source);
    require_positive(c.num_hidden_layers, "num_hidden_layers", source);
    require_positive(c.num_attention_heads, "num_attention_heads", source);
    require_positive(c.num_key_value_heads, "num_key_value_heads", source);
    if (c.hidden_size % c.num_attention_heads != 0) {
        throw ConfigError(ErrorInfo{source}.at("key 'hidden_size'").expected("a multiple of num_attention_heads (" +
                                                                             std::to_string(c.num_attention_heads) + ")")
                              .found(std::to_string(c.hidden_size)));
    }
    if (c.num_attention_heads % c.num_key_value_heads != 0) {
        throw ConfigError(ErrorInfo{source}.at("key 'num_key_value_heads'")
                              .expected("a divisor of num_attention_heads (" + std::to_string(c.num_attention_heads) + ")")
                              .found(std::to_string(c.num_key_value_heads)));
    }
    if (c.hidden_act != "silu") {
        throw ConfigError(ErrorInfo{source}.at("key 'hidden_act'").expected("\"silu\"").found("\"" + c.hidden_act + "\""));
    }
    return c;
}

BertConfig parse_bert_config(const json& j, const std::string& source) {
    if (!j.is_object()) throw ConfigError(ErrorInfo{source}.expected("a JSON object").found(j.type_name()));
    BertConfig c;
    std::string model_type;
    read_field(j, "model_type", model_type, source);
    if (!model_type.empty() && model_type != "bert" && model_type != "xlm-roberta" && model_type != "roberta") {
        throw ConfigError(ErrorInfo{source}.at("key 'model_type'").expected("\"bert\" or \"xlm-roberta\"").found("\"" + model_type + "\"")
                              .hint("the embedding model must be a BERT-family model such as bge-large-zh-v1.5 or bge-m3"));
    }
    read_field(j, "vocab_size", c.vocab_size, source);
    read_field(j, "hidden_size", c.hidden_size, source);
    read_field(j, "num_hidden_layers", c.num_hidden_layers, source);
    read_field(j, "num_attention_heads", c.num_attention_heads, source);
    read_field(j, "intermediate_size", c.intermediate_size, source);
    read_field(j, "max_position_embeddings", c.max_position_embeddings, source);
    read_field(j, "type_vocab_size", c.type_vocab_size, source);
    read_field(j, "pad_token_id", c.pad_token_id, source);
    read_field(j, "layer_norm_eps", c.layer_norm_eps, source);
    read_field(j, "hidden_act", c.hidden_act, source);
    read_field(j, "torch_dtype", c.torch_dtype, source);
    read_field(j, "dtype", c.torch_dtype, source);
    require_positive(c.hidden_size, "hidden_size", source);
    require_positive(c.num_attention_heads, "num_attention_heads", source);
    if (c.hidden_size % c.num_attention_heads != 0) {
        throw ConfigError(ErrorInfo{source}.at("key 'hidden_size'").expected("a multiple of num_attention_heads").found(std::to_string(c.hidden_size)));
    }
    return c;
}

GenerationConfig parse_generation_config(const json& j, const std::string& source) {
    if (!j.is_object()) throw ConfigError(ErrorInfo{source}.expected("a JSON object").found(j.type_name()));
    GenerationConfig g;
    read_opt(j, "do_sample", g.do_sample, source);
    read_opt(j, "temperature", g.temperature, source);
    read_opt(j, "top_p", g.top_p, source);
    read_opt(j, "top_k", g.top_k, source);
    read_opt(j, "repetition_penalty", g.repetition_penalty, source);
    read_opt(j, "max_new_tokens", g.max_new_tokens, source);
    read_opt(j, "pad_token_id", g.pad_token_id, source);
    read_opt(j, "bos_token_id", g.bos_token_id, source);
    g.eos_token_id = read_id_list(j, "eos_token_id", source);
    return g;
}

std::string resolve_model_dir(const std::string& spec, const std::string& key, const std::vector<std::string>& roots) {
    std::error_code ec;
    if (spec.empty()) throw ConfigError(ErrorInfo{}.at(key).msg("is required").hint("a Hugging Face model folder (config.json + *.safetensors)"));
    if (fs::is_directory(spec, ec)) return spec;
    std::vector<std::string> tried = {spec};
    const std::string base = fs::path(spec).filename().string();
    for (const auto& root : roots) {
        for (const std::string& name : {spec, base}) {
            if (name.empty() || fs::path(name).is_absolute()) continue;
            const fs::path cand = fs::path(root) / "models" / name;
            if (std::find(tried.begin(), tried.end(), cand.string()) != tried.end()) continue;
            if (fs::is_directory(cand, ec)) return cand.string();
            tried.push_back(cand.string());
        }
    }
    std::string looked;
    for (const auto& t : tried) looked += (looked.empty() ? "" : ", ") + t;
    const bool hub_like = !fs::path(spec).is_absolute() && std::count(spec.begin(), spec.end(), '/') == 1 && spec.front() != '.';
    ErrorInfo info;
    info.at(key).msg(hub_like ? "'" + spec + "' looks like a model hub id, and pdsd downloads nothing"
                              : "no model folder '" + spec + "'")
        .expected("a local folder with config.json and *.safetensors")
        .found("none of: " + looked);
    const std::string dest = "models/" + (base.empty() ? spec : base);
    info.hint("fetch it once, then point " + key + " at the folder (or leave it at the hub id: pdsd looks in " + dest +
              "): `huggingface-cli download " + spec + " --local-dir " + dest + "`, `modelscope download --model " + spec +
              " --local_dir " + dest + "`, or `git clone https://huggingface.co/" + spec + " " + dest + "`");
    throw ConfigError(info);
}

Qwen2Config load_qwen2_config(const std::string& dir_or_file) {
    std::string path = config_path(dir_or_file, "config.json");
    return parse_qwen2_config(read_json_file(path), path);
}

BertConfig load_bert_config(const std::string& dir_or_file) {
    std::string path = config_path(dir_or_file, "config.json");
    return parse_bert_config(read_json_file(path), path);
}

GenerationConfig load_generation_config(const std::string& dir) {
    fs::path p = fs::path(dir) / "generation_config.json";
    if (!fs::exists(p)) return {};
    return parse_generation_config(read_json_file(p.string()), p.string());
}

json to_json(const Qwen2Config& c) {
    json j = {
        {"architectures", {"Qwen2ForCausalLM"}},
        {"attention_dropout", 0.0},
        {"hidden_act", c.hidden_act},
        {"hidden_size", c.hidden_size},
        {"initializer_range", 0.02},
        {"intermediate_size", c.intermediate_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"max_window_layers", c.num_hidden_layers},
        {"model_type", "qwen2"},
        {"num_attention_heads", c.num_attention_heads},
        {"num_hidden_layers", c.num_hidden_layers},
        {"num_key_value_heads", c.num_key_value_heads},
        {"rms_norm_eps", c.rms_norm_eps},
        {"rope_theta", c.rope_theta},
        {"sliding_window", c.max_position_embeddings},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"torch_dtype", c.torch_dtype},
        {"use_cache", true},
        {"use_sliding_window", false},
        {"vocab_size", c.vocab_size},
    };
    if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
    if (c.eos_token_id.size() == 1) j["eos_token_id"] = c.eos_token_id[0];
    else if (!c.eos_token_id.empty()) j["eos_token_id"] = c.eos_token_id;
    if (c.pdsd_random_weights) j["pdsd_random_weights"] = true;
    return j;
}

}  // namespace pdsd
