#include "pdsd/core/lf_args.h"

namespace pdsd {

ConfigSchema lf_schema(LfArgs& a, const std::string& command) {
    ConfigSchema s(command);
    auto& m = a.model;
    s.add("model_name_or_path", &m.model_name_or_path, "Hugging Face folder of the base model");
    s.add("adapter_name_or_path", &m.adapter_name_or_path, "LoRA adapter folder(s), comma-separated, applied in order");
    s.add("device", &m.device, "auto | cpu | cuda | cuda:N (pdsd)");
    s.add("quantization_bit", &m.quantization_bit, "QLoRA: 4 | 8 stores the frozen base in 4 bits (bitsandbytes NF4/FP4 blocks) or 8 bits (int8 rows)");
    s.add("quantization_method", &m.quantization_method, "bnb (bitsandbytes' formats)");
    s.add("quantization_type", &m.quantization_type, "nf4 | fp4: the 4-bit code of quantization_bit 4 (ignored with 8)");
    s.add("double_quantization", &m.double_quantization, "quantization_bit 4: also store the block absmaxes in 8 bits (ignored with 8)");

    auto& d = a.data;
    s.add("dataset", &d.dataset, "dataset names from dataset_info.json, comma-separated");
    s.add("eval_dataset", &d.eval_dataset, "evaluation dataset names (instead of a val_size split)");
    s.add("dataset_dir", &d.dataset_dir, "folder holding dataset_info.json");
    s.add("template", &d.template_name, "chat template used to render examples (qwen)");
    s.add("cutoff_len", &d.cutoff_len, "maximum tokens per example after truncation");
    s.add("max_samples", &d.max_samples, "keep the first N examples of each dataset");
    s.add("val_size", &d.val_size, "held-out fraction (<1) or number of examples (>=1)");
    s.add("train_on_prompt", &d.train_on_prompt, "also train on prompt tokens");
    s.add("mask_history", &d.mask_history, "train only the last turn of multi-turn examples");
    s.add("mix_strategy", &d.mix_strategy, "concat | interleave_under | interleave_over (round robin)");
    s.add("default_system", &d.default_system, "system prompt used when an example has none");

    auto& f = a.finetuning;
    s.add("stage", &f.stage, "training stage (sft)");
    s.add("finetuning_type", &f.finetuning_type, "lora | freeze | full");
    s.add("freeze_trainable_layers", &f.freeze_trainable_layers, "freeze: train the last N layers (N > 0) or the first -N (N < 0)");
    s.add("freeze_trainable_modules", &f.freeze_trainable_modules, "freeze: sub-modules of those layers (all, or e.g. mlp,self_attn)");
    s.add("freeze_extra_modules", &f.freeze_extra_modules, "freeze: modules outside the layers to train too (embed_tokens, norm, lm_head)");
    s.add("pure_bf16", &f.pure_bf16, "bf16 weights and AdamW state without fp32 master weights (CUDA)");
    s.add("lora_target", &f.lora_target, "linear layers to adapt, comma-separated, or 'all'");
    s.add("lora_rank", &f.lora_rank, "LoRA rank r");
    s.add("lora_alpha", &f.lora_alpha_opt, "LoRA alpha (default 2 x lora_rank)");
    s.add("lora_dropout", &f.lora_dropout, "dropout on the LoRA input");
    s.add("use_rslora", &f.use_rslora, "rank-stabilised scaling alpha/sqrt(r)");
    s.add("plot_loss", &f.plot_loss, "write training_loss.png at the end");

    auto& t = a.training;
    s.add("output_dir", &t.output_dir, "where checkpoints, logs and the adapter go");
    s.add("do_train", &t.do_train, "run training");
    s.add("overwrite_output_dir", &t.overwrite_output_dir, "start over instead of resuming");
    s.add("per_device_train_batch_size", &t.per_device_train_batch_size, "sequences per micro-batch");
    s.add("per_device_eval_batch_size", &t.per_device_eval_batch_size, "sequences per evaluation batch");
    s.add("gradient_accumulation_steps", &t.gradient_accumulation_steps, "micro-batches per optimizer step");
    s.add("learning_rate", &t.learning_rate, "peak learning rate");
    s.add("num_train_epochs", &t.num_train_epochs, "passes over the data");
    s.add("max_steps", &t.max_steps, "optimizer steps; > 0 overrides num_train_epochs");
    s.add("lr_scheduler_type", &t.lr_scheduler_type, "linear | cosine | constant | constant_with_warmup");
    s.add("warmup_steps", &t.warmup_steps, "linear warmup steps");
    s.add("warmup_ratio", &t.warmup_ratio, "warmup as a fraction of all steps (when warmup_steps is 0)");
    s.add("weight_decay", &t.weight_decay, "AdamW decoupled weight decay");
    s.add("adam_beta1", &t.adam_beta1, "AdamW beta1");
    s.add("adam_beta2", &t.adam_beta2, "AdamW beta2");
    s.add("adam_epsilon", &t.adam_epsilon, "AdamW epsilon");
    s.add("max_grad_norm", &t.max_grad_norm, "gradient clipping norm (0 = off)");
    s.add("logging_steps", &t.logging_steps, "log every N optimizer steps");
    s.add("save_steps", &t.save_steps, "checkpoint every N optimizer steps");
    s.add("save_total_limit", &t.save_total_limit, "keep at most N checkpoints");
    s.add("eval_strategy", &t.eval_strategy, "no | steps | epoch");
    s.add("eval_steps", &t.eval_steps, "evaluate every N steps");
    s.add("bf16", &t.bf16, "bf16 mixed precision (CUDA)");
    s.add("fp16", &t.fp16, "fp16 mixed precision (CUDA)");
    s.add("gradient_checkpointing", &t.gradient_checkpointing, "recompute activations in backward");
    s.add("disable_gradient_checkpointing", &t.disable_gradient_checkpointing, "keep every layer's activations (LF: checkpointing is on by default)");
    s.add("seed", &t.seed, "random seed");
    s.add("resume_from_checkpoint", &t.resume_from_checkpoint, "checkpoint folder to resume from");
    s.add("report_to", &t.report_to, "none (pdsd writes trainer_log.jsonl)");

    auto& e = a.export_;
    s.add("export_dir", &e.export_dir, "output folder of the merged model");
    s.add("export_size", &e.export_size, "maximum shard size in GB");
    s.add("export_legacy_format", &e.export_legacy_format, "write .bin instead of safetensors (not supported)");
    s.add("export_device", &e.export_device, "device used for merging (cpu)");
    s.add("export_dtype", &e.export_dtype, "auto | bf16 | fp16 | fp32 (pdsd)");
    s.add("export_format", &e.export_format, "safetensors | gguf (pdsd)");
    s.add("gguf_type", &e.gguf_type, "bf16 | f16 | q8_0: weight type of the GGUF file (pdsd)");

    s.add_ignored("deepspeed", "pdsd uses its own single-process or c10d data-parallel trainer");
    s.add_ignored("flash_attn", "pdsd always uses torch scaled_dot_product_attention (flash kernels on CUDA)");
    s.add_ignored("use_fast_tokenizer", "pdsd has one tokenizer implementation");
    s.add_ignored("overwrite_cache", "pdsd tokenizes on the fly; there is no dataset cache");
    s.add_ignored("ddp_timeout", "pdsd's c10d process group uses its own timeout");
    s.add_ignored("trust_remote_code", "pdsd runs no model code from the model folder");
    s.add_ignored("dataloader_num_workers", "pdsd prepares batches in-process");
    s.add_ignored("preprocessing_batch_size", "pdsd tokenizes in-process");
    s.add_ignored("preprocessing_num_workers", "pdsd tokenizes in-process, on the fly");
    s.add_ignored("ddp_find_unused_parameters", "not needed by pdsd's data-parallel trainer");
    s.add_ignored("save_only_model", "pdsd always saves the adapter plus optimizer state");
    return s;
}

}  // namespace pdsd
