// Text generation over token ids (no tokenizer here: stop strings and detokenisation belong to
// the caller, which watches tokens through the callback and returns false to stop).
//
//   auto gen = pdsd::model::Generator::load("path/to/Qwen2.5-0.5B-Instruct", "cpu", "");
//   GenerationOptions o; o.max_new_tokens = 128;           // unset fields: generation_config.json
//   GenerationResult r = gen.generate(prompt_ids, o, [&](int64_t tok) { print(tok); return true; });
//
// Prefill runs the prompt once into a preallocated static KV cache (per layer
// (B, n_kv_heads, max_len, head_dim), reused across calls), then one token per step.
// Processing per step follows HF: repetition penalty (over prompt + generated tokens), then
// temperature, top-k, top-p, and a multinomial draw from a torch generator seeded with `seed`;
// greedy (argmax, after the repetition penalty) when do_sample is false or temperature == 0.
// Batched generation left-pads the prompts; each row gives the tokens it would give alone
// (greedy; sampled rows share one random stream).
//
// This header is torch-free so chat/serve code can include it cheaply.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::model {

struct LoadedModel;  // loader.h

// Unset fields come from the model's generation_config.json, then HF's defaults
// (do_sample false, temperature 1, top_k 50, top_p 1, repetition_penalty 1), and
// max_new_tokens 512.
struct GenerationOptions {
    std::optional<int64_t> max_new_tokens;
    std::optional<bool> do_sample;
    std::optional<double> temperature;
    std::optional<int64_t> top_k;              // 0 = off
    std::optional<double> top_p;               // 1 = off
    std::optional<double> repetition_penalty;  // 1 = off
    std::optional<uint64_t> seed;              // unset: nondeterministic
    // Stop ids; unset: generation_config.json's eos_token_id, else config.json's. Empty = never.
    std::optional<std::vector<int64_t>> eos_token_id;
    bool use_cache = true;  // false: recompute the whole sequence each step (slow; for tests)
    // CUDA with the cache: replay each decode step from a CUDA graph captured on the first
    // step (model/decode_graph.h); false launches the kernels one by one.
    bool cuda_graph = true;
    // Single prompt with the cache: keep the keys/values of the longest common prefix with the
    // previous call's sequence (prompt + generated tokens) and prefill only the rest. Multi-turn
    // chat then prefills just the new turn.
    bool reuse_prefix = true;
};

enum class StopReason {
    eos,       // generated one of eos_token_id (included in tokens)
    length,    // max_new_tokens reached, or the model's max_position_embeddings
    callback,  // the callback returned false (the token it saw is included)
};
const char* to_string(StopReason r);

struct GenerationResult {
    std::vector<int64_t> tokens;  // generated ids only (not the prompt)
    StopReason reason = StopReason::length;
    int64_t prompt_tokens = 0;
    int64_t reused_prompt_tokens = 0;  // prompt tokens whose KV came from the previous call
    double prefill_seconds = 0;   // prompt forward + first token
    double decode_seconds = 0;    // every later token
};

// Called once per generated token (eos included); return false to stop that row.
using TokenCallback = std::function<bool(int64_t token)>;
using BatchTokenCallback = std::function<bool(size_t row, int64_t token)>;

// A model plus its reusable KV cache. Not thread-safe: one generation at a time.
class Generator {
public:
    explicit Generator(std::shared_ptr<LoadedModel> model);
    // load_qwen2(dir, {device, dtype, quant}) wrapped in a Generator; `quant` none | int8 | int4
    // quantizes at load, straight from the mapped file (LoadOptions::quant).
    static Generator load(const std::string& dir, const std::string& device = "cpu", const std::string& dtype = "",
                          const std::string& quant = "");

    GenerationResult generate(const std::vector<int64_t>& prompt, const GenerationOptions& options = {},
                              const TokenCallback& on_token = {});
    std::vector<GenerationResult> generate_batch(const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerationOptions& options = {},
                                                 const BatchTokenCallback& on_token = {});

    LoadedModel& model();
    // Weight-only quantization of the loaded CPU model in place (model/quant.h): `type` none |
    // int8 | int4; "" takes the `quant:` key of `model_settings_yaml` (when that file exists),
    // else none. Returns the quantized bytes (0: nothing done). Call before generating;
    // UsageError / ConfigError on a bad value or a non-CPU model. (Quantizing at load, load's
    // `quant`, skips the float copy this one starts from.)
    int64_t quantize(const std::string& type, const std::string& model_settings_yaml = "");
    // config.json's max_position_embeddings: prompt + generated tokens never exceed it.
    int64_t max_context() const;
    void release_cache();  // frees the KV cache memory (it is reallocated on demand)

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace pdsd::model
