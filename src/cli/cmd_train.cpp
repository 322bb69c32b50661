// `pdsd train`: SFT with finetuning_type lora, freeze or full (llamafactory-cli train).
//   pdsd train --config sft.yaml [--key value ...]     (also: pdsd train sft.yaml ...)
//   pdsd train --config sft.yaml --dry-run             plan only: examples, steps, params, memory
// Every LLaMA-Factory key goes through pdsd::lf_schema (YAML first, then --key value pairs).
#include "commands.h"

#include "pdsd/core/lf_args.h"
#include "pdsd/train/trainer.h"

#include <cstdio>
#include <memory>

#include <unistd.h>

namespace pdsd::cli {

namespace {
struct TrainCli {
    std::string config;
    bool dry_run = false;
    int64_t ce_chunk = 1024;
};
}  // namespace

void register_train(CLI::App& app, Registry& registry) {
    auto opts = std::make_shared<TrainCli>();
    auto* cmd = app.add_subcommand("train", "supervised fine-tuning (finetuning_type lora, freeze or full) with LLaMA-Factory's YAML keys and output layout");
    cmd->add_option("--config", opts->config, "LLaMA-Factory YAML (examples/train_lora/*.yaml); also accepted as the first argument");
    cmd->add_flag("--dry-run,--dry_run", opts->dry_run, "print the plan (examples, steps, trainable params, memory) and exit");
    cmd->add_option("--ce-chunk", opts->ce_chunk, "target tokens per LM-head/cross-entropy chunk")->capture_default_str();
    cmd->allow_extras();
    cmd->footer("Any LLaMA-Factory key as --key value after the YAML (e.g. --learning_rate 1e-4 --output_dir saves/x). "
                "Resumes from the newest output_dir/checkpoint-N automatically; Ctrl-C saves a checkpoint (exit 130).");
    registry.add(cmd, [cmd, opts] {
        LfArgs args;
        ConfigSchema schema = lf_schema(args, "train");
        std::vector<std::string> extras = cmd->remaining();
        std::string config = opts->config;
        if (config.empty() && !extras.empty() && extras[0].rfind("--", 0) != 0 && extras[0].find('=') == std::string::npos) {
            config = extras[0];
            extras.erase(extras.begin());
        }
        if (!config.empty()) schema.load_yaml(config);
        schema.apply_overrides(extras);
        train::TrainOptions o;
        o.args = args;
        o.dry_run = opts->dry_run;
        o.ce_chunk_tokens = opts->ce_chunk;
        o.progress_bar = ::isatty(2) != 0;
        train::TrainResult r = train::run_sft(o);
        if (!opts->dry_run && r.rank == 0) {  // data parallel: rank 0 reports
            std::printf("output_dir: %s\nsteps: %lld\ntrain_loss: %.6g\n", args.training.output_dir.c_str(),
                        static_cast<long long>(r.global_step), r.train_loss);
        }
    });
}

}  // namespace pdsd::cli
