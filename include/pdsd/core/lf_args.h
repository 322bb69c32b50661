// LLaMA-Factory's argument set, as typed structs with LLaMA-Factory's key names and
// defaults, so its YAML configs (examples/train_lora/*.yaml, merge_lora/*.yaml) load
// unchanged. One flat namespace of keys, like LLaMA-Factory's YAML; grouped here the way
// its hparams/*.py files group them.
#pragma once

#include "pdsd/core/config.h"

#include <optional>
#include <string>
#include <vector>

namespace pdsd {

struct LfModelArgs {
    std::string model_name_or_path;                 // HF folder of the base model
    std::vector<std::string> adapter_name_or_path;  // LoRA adapter folder(s), applied in order
    std::string device = "auto";                    // pdsd: auto | cpu | cuda[:N]
    // QLoRA (LLaMA-Factory ModelArguments): the frozen base stored in 4 or 8 bits while LoRA trains.
    std::optional<int64_t> quantization_bit;        // 4 (NF4/FP4) | 8 (int8 rows)
    std::string quantization_method = "bnb";        // bitsandbytes' formats
    std::string quantization_type = "nf4";          // nf4 | fp4 (4-bit only)
    bool double_quantization = true;                // absmaxes stored in 8 bits too (4-bit only)
};

struct LfDataArgs {
    std::vector<std::string> dataset;               // names in dataset_info.json
    std::vector<std::string> eval_dataset;
    std::string dataset_dir = "data";
    std::string template_name;                      // key "template": qwen, ...
    int64_t cutoff_len = 2048;                      // tokens per example after truncation
    std::optional<int64_t> max_samples;             // first N examples of each dataset
    double val_size = 0.0;                          // fraction (< 1) or count (>= 1) held out
    bool train_on_prompt = false;
    bool mask_history = false;
    std::string mix_strategy = "concat";
    std::optional<std::string> default_system;      // overrides the template's default system
};

struct LfFinetuningArgs {
    std::string stage = "sft";
    std::string finetuning_type = "lora";
    std::vector<std::string> lora_target = {"all"};
    int64_t lora_rank = 8;
    std::optional<int64_t> lora_alpha_opt;          // key "lora_alpha"; default 2 x lora_rank
    double lora_dropout = 0.0;
    bool use_rslora = false;
    bool plot_loss = false;
    // finetuning_type freeze (LLaMA-Factory FinetuningArguments): the last N decoder layers
    // (N > 0) or the first -N (N < 0); in them, the sub-modules named (or "all"); plus
    // modules outside the layers (embed_tokens, norm, lm_head).
    int64_t freeze_trainable_layers = 2;
    std::vector<std::string> freeze_trainable_modules = {"all"};
    std::vector<std::string> freeze_extra_modules;
    bool pure_bf16 = false;                         // bf16 weights and optimizer state, no fp32 master copy
    int64_t lora_alpha() const { return lora_alpha_opt.value_or(lora_rank * 2); }
};

struct LfTrainingArgs {
    std::string output_dir;
    bool do_train = true;
    bool overwrite_output_dir = false;
    int64_t per_device_train_batch_size = 8;        // HF default
    int64_t per_device_eval_batch_size = 8;
    int64_t gradient_accumulation_steps = 1;
    double learning_rate = 5e-5;
    double num_train_epochs = 3.0;
    int64_t max_steps = -1;                         // > 0 overrides epochs
    std::string lr_scheduler_type = "linear";       // linear | cosine | constant | constant_with_warmup
    int64_t warmup_steps = 0;
    double warmup_ratio = 0.0;
    double weight_decay = 0.0;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    double max_grad_norm = 1.0;
    int64_t logging_steps = 500;
    int64_t save_steps = 500;
    std::optional<int64_t> save_total_limit;
    std::string eval_strategy = "no";               // no | steps | epoch
    std::optional<int64_t> eval_steps;
    bool bf16 = false;
    bool fp16 = false;
    bool gradient_checkpointing = false;
    bool disable_gradient_checkpointing = false;    // LF model arg: checkpointing is on unless this is set
    // LLaMA-Factory enables checkpointing unless disable_gradient_checkpointing; HF's key turns it on too.
    bool checkpointing_enabled() const { return gradient_checkpointing || !disable_gradient_checkpointing; }
    int64_t seed = 42;
    std::optional<std::string> resume_from_checkpoint;
    std::string report_to = "none";
};

struct LfExportArgs {
    std::string export_dir;
    double export_size = 5;                         // GB (10^9 bytes) per shard; fractions allowed
    bool export_legacy_format = false;              // true would mean .bin: refused
    std::string export_device = "cpu";
    std::string export_dtype = "auto";              // pdsd: auto | bf16 | fp16 | fp32
    std::string export_format = "safetensors";      // pdsd: safetensors | gguf
    std::string gguf_type = "bf16";                 // pdsd, with export_format gguf: bf16 | f16 | q8_0
};

struct LfArgs {
    LfModelArgs model;
    LfDataArgs data;
    LfFinetuningArgs finetuning;
    LfTrainingArgs training;
    LfExportArgs export_;
};

// Schema binding every LfArgs field under its LLaMA-Factory key, plus the keys that
// pdsd accepts and ignores (deepspeed, flash_attn, use_fast_tokenizer, overwrite_cache,
// ddp_timeout, ...). `command` names the subcommand in errors ("train", "export").
ConfigSchema lf_schema(LfArgs& args, const std::string& command);

}  // namespace pdsd
