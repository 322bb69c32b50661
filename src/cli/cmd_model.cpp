// `pdsd model init`: random-weight Qwen2 checkpoints in HF format (tests, benchmarks).
// `pdsd model bench`: prefill/decode speed of a Qwen2 folder, as JSON on stdout.
#include "commands.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/model/tools.h"
#include "pdsd/train/logits_dump.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

namespace pdsd::cli {

namespace {
// An output folder option: creatable and a folder (not a file, not read-only); a user
// error naming the option otherwise (was a filesystem_error: exit 2).
void check_output_dir(const std::string& dir, const std::string& option) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
        throw UsageError(ErrorInfo{dir}.at(option).msg("exists and is not a folder").hint("give a folder path"));
    fs::create_directories(dir, ec);
    if (ec) throw IoError(ErrorInfo{dir}.at(option).msg("cannot create the folder").found(ec.message()));
}
}  // namespace

void register_model(CLI::App& app, Registry& registry) {
    auto* model = app.add_subcommand("model", "Qwen2 model utilities");
    model->require_subcommand(1);

    auto init = std::make_shared<model::InitOptions>();
    auto config_file = std::make_shared<std::string>();
    auto preset = std::make_shared<std::string>();
    auto tokenizer = std::make_shared<std::string>();
    auto* ci = model->add_subcommand("init", "write a random-weight Qwen2 checkpoint in Hugging Face format");
    auto* oc = ci->add_option("--config", *config_file, "config.json giving the shape");
    auto* op = ci->add_option("--preset", *preset, "qwen2.5-0.5b | qwen2.5-1.5b | qwen2.5-7b | tiny");
    oc->excludes(op);
    ci->add_option("--out", init->out_dir, "output folder")->required();
    ci->add_option("--seed", init->seed, "random seed")->capture_default_str();
    ci->add_option("--tokenizer", *tokenizer, "folder whose tokenizer files are copied into --out");
    ci->add_option("--dtype", init->dtype, "bf16 | fp16 | fp32 storage dtype")->capture_default_str();
    registry.add(ci, [=] {
        if (!config_file->empty()) init->config_file = *config_file;
        if (!preset->empty()) init->preset = *preset;
        if (!tokenizer->empty()) init->tokenizer_dir = *tokenizer;
        check_output_dir(init->out_dir, "--out");
        int64_t n = model::init_random_checkpoint(*init);
        std::cout << nlohmann::json({{"out", init->out_dir}, {"parameters", n}}).dump() << "\n";
    });

    auto bench = std::make_shared<model::BenchOptions>();
    auto* cb = model->add_subcommand("bench", "time prefill and greedy decode (random prompt), print JSON");
    cb->add_option("--model", bench->model_dir, "Hugging Face Qwen2 folder")->required();
    cb->add_option("--prompt-len", bench->prompt_len, "prompt tokens")->capture_default_str()->check(CLI::PositiveNumber);
    cb->add_option("--new", bench->new_tokens, "generated tokens")->capture_default_str()->check(CLI::PositiveNumber);
    cb->add_option("--batch", bench->batch, "prompts per batch")->capture_default_str()->check(CLI::PositiveNumber);
    cb->add_option("--runs", bench->runs, "timed runs after one warm-up (best is reported)")->capture_default_str();
    cb->add_option("--device", bench->device, "cpu | cuda | cuda:N")->capture_default_str();
    cb->add_option("--dtype", bench->dtype, "bf16 | fp16 | fp32 (default: bf16 on CUDA; on CPU bf16 for a bf16 checkpoint when the CPU has native bf16, else fp32)");
    cb->add_option("--quant", bench->quant, "none | int8 | int4: weight-only quantization at load (CPU)");
    cb->add_option("--cuda-graph", bench->cuda_graph, "CUDA: replay decode steps from a captured graph")->capture_default_str();
    registry.add(cb, [=] { std::cout << model::bench_generation(*bench).dump() << "\n"; });

    auto dump = std::make_shared<train::LogitsDumpOptions>();
    auto id_rows = std::make_shared<std::vector<std::string>>();
    auto* cl = model->add_subcommand("logits", "fp32 CPU logits of a Qwen2 folder (+ LoRA adapter) into a safetensors file");
    cl->add_option("--model", dump->model_dir, "Hugging Face Qwen2 folder")->required();
    cl->add_option("--adapter", dump->adapter_dir, "PEFT LoRA adapter folder (attached unmerged, as pdsd train does)");
    cl->add_option("--ids", *id_rows, "comma-separated token ids, one sequence per --ids")->required();
    cl->add_option("--out", dump->out_path, "output .safetensors (logits, input_ids, attention_mask)")->required();
    cl->add_option("--quantization_bit", dump->quantization_bit, "4 | 8: the base's decoder projections in 4 / 8 bits, as QLoRA trains them (0 = float)")->capture_default_str();
    cl->add_option("--quantization_type", dump->quantization_type, "nf4 | fp4 (with --quantization_bit 4)")->capture_default_str();
    cl->add_option("--double_quantization", dump->double_quantization, "8-bit block scales (with --quantization_bit 4)")->capture_default_str();
    registry.add(cl, [=] {
        for (const auto& row : *id_rows) {
            std::vector<int64_t> ids;
            std::stringstream in(row);
            std::string tok;
            while (std::getline(in, tok, ',')) {
                if (!tok.empty())
                    ids.push_back(parse_int_in_range(tok, "--ids", 0, std::numeric_limits<int32_t>::max()));
            }
            dump->rows.push_back(std::move(ids));
        }
        train::dump_logits(*dump);
    });
}

}  // namespace pdsd::cli
