// Supervised fine-tuning (LLaMA-Factory stage sft) of a Qwen2 checkpoint, driven by
// LLaMA-Factory's argument set (core/lf_args.h): finetuning_type lora, freeze or full.
//
// A recipe of steps (trainer.cpp, torchtune's shape): setup data -> setup model -> resume ->
// train (evaluate, save checkpoints) -> finish. What trains and how it is saved is the one
// method seam, train/trainable.h; batching and order are train/batching.h.
//
// Pipeline: dataset_info.json registry -> conversations -> LF `qwen` template (masking,
// cutoff_len truncation) -> optional val_size split (seeded) -> per-epoch seeded shuffle ->
// micro-batches right-padded to a multiple of 8 (labels -100, pad id = <|endoftext|>) ->
// forward (LoRA on the targeted projections, or the selected base weights requiring grad) ->
// chunked token CE (train/loss.h) normalised by the number of target tokens in the whole
// accumulated step -> max_grad_norm clipping -> torch AdamW at the HF schedule's rate ->
// logs, evals, checkpoints.
//
// Outputs, in LLaMA-Factory's layout under output_dir:
//   checkpoint-N/  the trained part (lora: adapter_model.safetensors + adapter_config.json;
//                  freeze/full: an HF model folder, trained tensors as fp32 master weights),
//                  optimizer.safetensors (AdamW exp_avg / exp_avg_sq per trained tensor),
//                  trainer_state.json, pdsd_resume.json (scheduler step + lr, RNG state,
//                  data position, hashes)
//   the same trained part (final), trainer_state.json,
//   trainer_log.jsonl, train_results.json, all_results.json (+ eval_results.json),
//   training_loss.png (+ training_eval_loss.png) when plot_loss.
//
// Gradient checkpointing (train/checkpointing.h) per decoder layer unless
// disable_gradient_checkpointing (LLaMA-Factory's default). Data parallel (train/distributed.h)
// when the launcher sets WORLD_SIZE > 1: the step's micro-batches are dealt out to the ranks,
// gradients summed (normalised by the global target-token count), rank 0 writes the outputs.
//
// Resume: from resume_from_checkpoint, or automatically from the newest checkpoint-N in
// output_dir (unless overwrite_output_dir). Refused (ConfigError) when the data, the base
// model or a hyper-parameter that changes the trajectory differs from the checkpoint's.
// Ctrl-C (pdsd::interrupt_requested) saves a checkpoint after the current step and throws
// Interrupted (exit 130).
#pragma once

#include "pdsd/core/lf_args.h"

#include <cstdint>
#include <string>

namespace pdsd::train {

struct TrainOptions {
    LfArgs args;
    bool dry_run = false;          // print the plan (stdout, JSON-ish lines) and stop
    int64_t ce_chunk_tokens = 1024;  // target positions per LM-head/CE chunk (train/loss.h)
    bool progress_bar = false;     // redraw one status line on stderr (a TTY) instead of log lines
};

struct TrainResult {
    int64_t global_step = 0;
    int64_t max_steps = 0;
    double train_loss = 0.0;       // mean of the logged step losses of this run (HF: train_loss)
    int64_t resumed_from = 0;      // 0 = fresh start
    int64_t trainable_params = 0;
    int64_t rank = 0;              // this process's data-parallel rank (0 without WORLD_SIZE)
};

// The plan printed by --dry-run (also logged at the start of training).
struct TrainPlan {
    int64_t examples = 0, eval_examples = 0;
    int64_t tokens = 0, target_tokens = 0;
    int64_t truncated = 0, lost_eos = 0;
    int64_t steps_per_epoch = 0, max_steps = 0, warmup_steps = 0;
    int64_t trainable_params = 0, total_params = 0;
    int64_t max_seq_len = 0;           // longest example after truncation (padded to 8)
    double peak_memory_gib = 0.0;      // estimate: weights + trained tensors/AdamW + activations + CE chunk
    bool gradient_checkpointing = false;  // LF: on unless disable_gradient_checkpointing
    std::string device, dtype;
    std::string finetuning_type = "lora";
    int64_t quantization_bit = 0;      // QLoRA: 4 | 8; 0: none
    std::string quantization;          // QLoRA: e.g. "4-bit nf4, double quantization"; empty: none
    struct MethodMemory {
        std::string method;            // full | freeze | lora | qlora-8 | qlora-4
        int64_t trainable_params = 0;
        double peak_memory_gib = 0.0;  // the same estimate as peak_memory_gib, for that method
    };
    std::vector<MethodMemory> methods;
    std::string to_text() const;
};

TrainResult run_sft(const TrainOptions& options);

}  // namespace pdsd::train
