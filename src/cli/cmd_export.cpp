// `pdsd export`: merge LoRA adapters into the base model (llamafactory-cli export).
//   pdsd export merge.yaml [--key value ...]
//   pdsd export --config merge.yaml [--key value ...]
//   pdsd export --model_name_or_path BASE --adapter_name_or_path A[,B] --template qwen
//               --finetuning_type lora --export_dir OUT [--export_size 5] [--export_dtype bf16]
// Every LLaMA-Factory key goes through pdsd::lf_schema (YAML first, then --key value pairs).
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/lf_args.h"
#include "pdsd/export/merge.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>

namespace fs = std::filesystem;

namespace pdsd::cli {

namespace {
struct ExportCli {
    std::string config;
    std::string check_dir;
    bool no_verify = false;
};

// An Ollama model name from the export folder's name: lower case letters, digits, '.', '_'
// and '-' (other characters become '-').
std::string ollama_model_name(const fs::path& dir) {
    std::string n = dir.filename().string();
    for (char& c : n) {
        unsigned char u = static_cast<unsigned char>(c);
        c = (std::isalnum(u) || c == '.' || c == '_' || c == '-') ? static_cast<char>(std::tolower(u)) : '-';
    }
    return n.empty() ? std::string("pdsd-model") : n;
}
}  // namespace

void register_export(CLI::App& app, Registry& registry) {
    auto opts = std::make_shared<ExportCli>();
    auto* cmd = app.add_subcommand("export", "merge LoRA adapters into the base model and write a HF model folder");
    cmd->add_option("--config", opts->config, "LLaMA-Factory YAML (examples/merge_lora/*.yaml); also accepted as the first argument");
    cmd->add_flag("--no_verify,--no-verify", opts->no_verify, "skip the self-check of the merged weights against base + adapter");
    cmd->add_option("--check", opts->check_dir,
                    "self-check an existing merged folder (pdsd's or LLaMA-Factory's) against model_name_or_path + "
                    "adapter_name_or_path instead of exporting");
    cmd->allow_extras();
    cmd->footer(
        "LLaMA-Factory keys, as --key value (after the YAML): model_name_or_path, adapter_name_or_path (comma-separated, "
        "applied in order), template (qwen), finetuning_type (lora), export_dir, export_size (GB per shard, "
        "fractions allowed), export_dtype (auto|bf16|fp16|fp32), export_legacy_format (false only), default_system, export_format "
        "(safetensors|gguf: also writes model-<gguf_type>.gguf for llama.cpp), gguf_type (bf16|f16|q8_0, or llama-quantize's mixes q4_0|q5_0|q4_k_m|q5_k_m|q6_k); with a template the "
        "Modelfile points Ollama at the GGUF and the `ollama create` line is printed.");
    registry.add(cmd, [cmd, opts] {
        LfArgs args;
        args.data.template_name = "";
        ConfigSchema schema = lf_schema(args, "export");
        std::vector<std::string> extras = cmd->remaining();
        std::string config = opts->config;
        if (config.empty() && !extras.empty() && extras[0].rfind("--", 0) != 0 && extras[0].find('=') == std::string::npos) {
            config = extras[0];  // llamafactory-cli export merge.yaml
            extras.erase(extras.begin());
        }
        if (!config.empty()) schema.load_yaml(config);
        schema.apply_overrides(extras);
        if (!opts->check_dir.empty() && args.export_.export_dir.empty()) args.export_.export_dir = opts->check_dir;
        exporter::ExportOptions o = exporter::options_from_lf(args);
        o.model_name_or_path = resolve_model_dir(o.model_name_or_path, "model_name_or_path", {".", "data"});
        o.verify = !opts->no_verify;
        if (!opts->check_dir.empty()) {
            exporter::VerifyReport v = exporter::self_check_export(o, opts->check_dir);
            std::printf("self-check: ok, %lld merged weights (max abs diff %.3g, %.3g of the tolerance), %lld other tensors "
                        "identical to the base\n",
                        static_cast<long long>(v.tensors_checked), v.max_abs_diff, v.max_tolerance_ratio,
                        static_cast<long long>(v.tensors_identical));
            if (v.logits_checked) {
                std::printf("logits self-check: ok, max abs diff %.3g (tolerance %.3g)\n", v.logits_max_abs_diff, v.logits_tolerance);
            }
            return;
        }
        exporter::ExportReport r = exporter::run_export(o);
        std::printf("export_dir: %s\n", r.export_dir.c_str());
        std::printf("dtype: %s\n", r.output_dtype.c_str());
        std::printf("tensors: %lld (%lld merged, %lld changed), %llu bytes\n", static_cast<long long>(r.tensors_total),
                    static_cast<long long>(r.tensors_merged), static_cast<long long>(r.tensors_changed),
                    static_cast<unsigned long long>(r.bytes_total));
        if (r.verify) {
            std::printf("self-check: ok, %lld merged weights, max abs diff %.3g (%.3g of the tolerance)\n",
                        static_cast<long long>(r.verify->tensors_checked), r.verify->max_abs_diff,
                        r.verify->max_tolerance_ratio);
            if (r.verify->logits_checked) {
                std::printf("logits self-check: ok, max abs diff %.3g (tolerance %.3g)\n", r.verify->logits_max_abs_diff,
                            r.verify->logits_tolerance);
            }
        } else {
            std::printf("self-check: skipped\n");
        }
        if (!r.gguf_file.empty()) {
            std::printf("gguf: %s (%s, %llu bytes)\n", r.gguf_file.c_str(), args.export_.gguf_type.c_str(),
                        static_cast<unsigned long long>(r.gguf_bytes));
        }
        for (const auto& f : r.files) std::printf("  %s\n", f.c_str());
        if (std::find(r.files.begin(), r.files.end(), "Modelfile") != r.files.end()) {
            fs::path dir = fs::absolute(r.export_dir).lexically_normal();
            std::printf("ollama: ollama create %s -f %s\n", ollama_model_name(dir).c_str(), (dir / "Modelfile").c_str());
        }
    });
}

}  // namespace pdsd::cli
