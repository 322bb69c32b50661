// Readers for Hugging Face model folders' JSON configs: Qwen2 and BERT config.json,
// generation_config.json. Field names are HF's. Readers validate what the model code
// relies on and throw ConfigError naming the file and key.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pdsd {

// config.json of Qwen2ForCausalLM (Qwen2 / Qwen2.5, any size).
struct Qwen2Config {
    int64_t vocab_size = 151936;
    int64_t hidden_size = 896;
    int64_t intermediate_size = 4864;
    int64_t num_hidden_layers = 24;
    int64_t num_attention_heads = 14;
    int64_t num_key_value_heads = 2;
    int64_t max_position_embeddings = 32768;
    double rms_norm_eps = 1e-6;
    double rope_theta = 1000000.0;   // top-level rope_theta, or rope_parameters/rope_scaling.rope_theta
    bool tie_word_embeddings = true;
    std::string hidden_act = "silu";
    std::string torch_dtype = "bfloat16";  // torch_dtype, or dtype in newer transformers
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_id;     // int or list in the file
    bool pdsd_random_weights = false;      // set by `pdsd model init`

    int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// config.json of BertModel (bge-large-zh-v1.5 and the like).
struct BertConfig {
    int64_t vocab_size = 21128;
    int64_t hidden_size = 1024;
    int64_t num_hidden_layers = 24;
    int64_t num_attention_heads = 16;
    int64_t intermediate_size = 4096;
    int64_t max_position_embeddings = 512;
    int64_t type_vocab_size = 2;
    int64_t pad_token_id = 0;
    double layer_norm_eps = 1e-12;
    std::string hidden_act = "gelu";
    std::string torch_dtype = "float32";
};

// generation_config.json; absent keys stay nullopt/empty so callers can layer defaults.
struct GenerationConfig {
    std::optional<bool> do_sample;
    std::optional<double> temperature;
    std::optional<double> top_p;
    std::optional<int64_t> top_k;
    std::optional<double> repetition_penalty;
    std::optional<int64_t> max_new_tokens;
    std::optional<int64_t> pad_token_id;
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_id;
};

// Parse from a JSON value; `source` names the file in errors.
Qwen2Config parse_qwen2_config(const nlohmann::json& j, const std::string& source);
BertConfig parse_bert_config(const nlohmann::json& j, const std::string& source);
GenerationConfig parse_generation_config(const nlohmann::json& j, const std::string& source);

// Load `<dir>/config.json` / `<dir>/generation_config.json` (dir may also be the file).
Qwen2Config load_qwen2_config(const std::string& dir_or_file);
BertConfig load_bert_config(const std::string& dir_or_file);
// Returns an empty GenerationConfig when the folder has none.
GenerationConfig load_generation_config(const std::string& dir);

// The model folder a user named: `spec` itself when it is a folder, else `models/<spec>` or
// `models/<last part of spec>` under each of `roots` (so the hub id Qwen/Qwen2.5-0.5B-Instruct
// finds models/Qwen2.5-0.5B-Instruct). pdsd downloads nothing: when none exists, ConfigError
// naming `key`, the places looked at, and how to fetch the folder (huggingface-cli /
// modelscope / git clone).
std::string resolve_model_dir(const std::string& spec, const std::string& key, const std::vector<std::string>& roots = {"."});

// Back to JSON in HF's spelling (what `pdsd model init` and `pdsd export` write).
nlohmann::json to_json(const Qwen2Config& c);

}  // namespace pdsd
