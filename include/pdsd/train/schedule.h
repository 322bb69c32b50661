// Learning-rate schedules with Hugging Face transformers' exact formulas
// (optimization.py: get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup with
// num_cycles 0.5, get_constant_schedule, get_constant_schedule_with_warmup), as used by
// LLaMA-Factory through the HF Trainer. Torch-free.
//
// HF drives them through LambdaLR: optimizer step k (1-based) runs with
// lr = base_lr * factor(k - 1), then scheduler.step() moves to factor(k); the value HF logs
// as "learning_rate" at step k is therefore lr(k), the rate of the NEXT update. With warmup
// the first update runs at lr 0. pdsd reproduces both conventions (see docs/training.md).
#pragma once

#include <cstdint>
#include <string>

namespace pdsd::train {

enum class ScheduleKind { linear, cosine, constant, constant_with_warmup };

// "linear" | "cosine" | "constant" | "constant_with_warmup"; other names throw ConfigError
// naming lr_scheduler_type.
ScheduleKind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(ScheduleKind kind);

// HF TrainingArguments.get_warmup_steps: warmup_steps when > 0, else ceil(total * warmup_ratio).
int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

struct LrSchedule {
    ScheduleKind kind = ScheduleKind::linear;
    double base_lr = 0.0;
    int64_t warmup_steps = 0;  // already resolved (resolve_warmup_steps)
    int64_t total_steps = 1;   // optimizer steps of the whole run
    double num_cycles = 0.5;   // cosine only: 0.5 = one half-wave from 1 to 0

    // The LambdaLR multiplier after `step` scheduler steps (step >= 0), in [0, 1].
    double factor(int64_t step) const;
    // base_lr * factor(step): the rate of optimizer update step+1.
    double lr(int64_t step) const { return base_lr * factor(step); }
};

}  // namespace pdsd::train
