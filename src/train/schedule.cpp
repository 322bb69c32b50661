// HF learning-rate schedules; see schedule.h. Formulas follow transformers/optimization.py.
#include "pdsd/train/schedule.h"

#include "pdsd/core/error.h"

#include <algorithm>
#include <cmath>

namespace pdsd::train {

ScheduleKind parse_schedule_kind(const std::string& name) {
    if (name == "linear") return ScheduleKind::linear;
    if (name == "cosine") return ScheduleKind::cosine;
    if (name == "constant") return ScheduleKind::constant;
    if (name == "constant_with_warmup") return ScheduleKind::constant_with_warmup;
    throw ConfigError(ErrorInfo{}.at("lr_scheduler_type")
                          .expected("linear, cosine, constant or constant_with_warmup")
                          .found("'" + name + "'")
                          .hint("pdsd implements the four HF schedules LLaMA-Factory configs use most"));
}

const char* schedule_kind_name(ScheduleKind kind) {
    switch (kind) {
        case ScheduleKind::linear: return "linear";
        case ScheduleKind::cosine: return "cosine";
        case ScheduleKind::constant: return "constant";
        case ScheduleKind::constant_with_warmup: return "constant_with_warmup";
    }
    return "?";
}

int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
    if (warmup_steps > 0) return warmup_steps;
    return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

double LrSchedule::factor(int64_t step) const {
    const double s = static_cast<double>(step);
    const double w = static_cast<double>(warmup_steps);
    const double warm = s / static_cast<double>(std::max<int64_t>(1, warmup_steps));
    switch (kind) {
        case ScheduleKind::constant:
            return 1.0;
        case ScheduleKind::constant_with_warmup:
            return step < warmup_steps ? warm : 1.0;
        case ScheduleKind::linear:
            if (step < warmup_steps) return warm;
            return std::max(0.0, static_cast<double>(total_steps - step) /
                                     static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
        case ScheduleKind::cosine: {
            if (step < warmup_steps) return warm;
            const double progress = (s - w) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
            return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
        }
    }
    return 1.0;
}

}  // namespace pdsd::train
