// Model utilities behind `pdsd model init` and `pdsd model bench`. Torch-free header.
#pragma once

#include "pdsd/core/hf_config.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace pdsd::model {

// Named Qwen2 shapes: "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b" (real sizes, vocab 151936 /
// 152064) and "tiny" (hidden 64, 2 layers, 4 q / 2 kv heads, vocab 151936: works with the real
// Qwen tokenizer, loads in milliseconds). UsageError for other names.
Qwen2Config qwen2_preset(const std::string& name);

struct InitOptions {
    std::optional<std::string> config_file;  // a config.json to copy the shape from
    std::optional<std::string> preset;       // or a preset name
    std::string out_dir;
    uint64_t seed = 0;
    std::optional<std::string> tokenizer_dir;  // copy tokenizer files from here
    std::string dtype = "bf16";                // storage dtype of model.safetensors
};

// Writes a random-weight HF checkpoint: config.json (pdsd_random_weights: true),
// generation_config.json (Qwen2.5-Instruct's sampling defaults), model.safetensors
// (weights N(0, 0.02), biases 0, norm weights 1, like HF's _init_weights) and the
// tokenizer files when asked. Returns the number of parameters.
int64_t init_random_checkpoint(const InitOptions& options);

struct BenchOptions {
    std::string model_dir;
    std::string device = "cpu";
    std::string dtype;        // "" = the loader's default (model/loader.h resolve_dtype)
    int64_t prompt_len = 128;
    int64_t new_tokens = 64;
    int64_t batch = 1;
    int64_t runs = 3;         // best of `runs` after one warm-up
    bool cuda_graph = true;   // GenerationOptions::cuda_graph
    std::string quant;        // "" / none | int8 | int4 (model/quant.h), quantized at load
    uint64_t seed = 0;
};

// Greedy generation of random prompts with eos disabled. Returns
// {"prefill_tokens_per_s", "decode_tokens_per_s", "prefill_s", "decode_s", ...}.
nlohmann::json bench_generation(const BenchOptions& options);

// Path of the shared object whose `sgemm_` this process calls (dladdr of the global symbol),
// "" when none is loaded. libtorch_cpu.so means torch's bundled MKL; a system libblas/OpenBLAS
// here means link order let it interpose torch's BLAS (slow fp32 decode; see src/CMakeLists.txt).
std::string blas_sgemm_provider();

}  // namespace pdsd::model
