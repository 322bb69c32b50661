// LR schedules: HF transformers formulas, value by value.
#include "pdsd/core/error.h"
#include "pdsd/train/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace pdsd::train;

TEST(Schedule, LinearWarmupThenDecayToZero) {
    LrSchedule s{ScheduleKind::linear, 1e-3, 10, 110};
    EXPECT_DOUBLE_EQ(s.factor(0), 0.0);  // HF: the first update runs at lr 0
    EXPECT_DOUBLE_EQ(s.factor(5), 0.5);
    EXPECT_DOUBLE_EQ(s.factor(10), 1.0);
    EXPECT_DOUBLE_EQ(s.factor(60), 0.5);  // (110 - 60) / (110 - 10)
    EXPECT_DOUBLE_EQ(s.factor(110), 0.0);
    EXPECT_DOUBLE_EQ(s.factor(200), 0.0);  // clamped at 0
    EXPECT_DOUBLE_EQ(s.lr(60), 5e-4);
}

TEST(Schedule, CosineHalfWaveAfterWarmup) {
    LrSchedule s{ScheduleKind::cosine, 5e-6, 100, 300};
    EXPECT_DOUBLE_EQ(s.factor(0), 0.0);
    EXPECT_DOUBLE_EQ(s.factor(1), 0.01);
    EXPECT_DOUBLE_EQ(s.factor(100), 1.0);
    EXPECT_NEAR(s.factor(200), 0.5, 1e-15);  // progress 0.5 -> cos(pi/2) = 0
    const double progress = (250.0 - 100.0) / 200.0;
    EXPECT_DOUBLE_EQ(s.factor(250), 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
    EXPECT_NEAR(s.factor(300), 0.0, 1e-15);
    EXPECT_DOUBLE_EQ(s.lr(100), 5e-6);
}

TEST(Schedule, CosineWithoutWarmupStartsAtFullRate) {
    LrSchedule s{ScheduleKind::cosine, 1.0, 0, 4};
    EXPECT_DOUBLE_EQ(s.factor(0), 1.0);
    EXPECT_NEAR(s.factor(1), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-16);
    EXPECT_NEAR(s.factor(2), 0.5, 1e-15);
}

TEST(Schedule, ConstantAndConstantWithWarmup) {
    LrSchedule c{ScheduleKind::constant, 2e-5, 10, 100};
    EXPECT_DOUBLE_EQ(c.factor(0), 1.0);  // constant ignores warmup, as HF's get_constant_schedule
    EXPECT_DOUBLE_EQ(c.factor(99), 1.0);
    LrSchedule w{ScheduleKind::constant_with_warmup, 2e-5, 4, 100};
    EXPECT_DOUBLE_EQ(w.factor(1), 0.25);
    EXPECT_DOUBLE_EQ(w.factor(4), 1.0);
    EXPECT_DOUBLE_EQ(w.factor(1000), 1.0);
}

TEST(Schedule, WarmupRatioRoundsUpLikeHF) {
    EXPECT_EQ(resolve_warmup_steps(100, 0.5, 10), 100);  // explicit steps win
    EXPECT_EQ(resolve_warmup_steps(0, 0.1, 95), 10);     // ceil(9.5)
    EXPECT_EQ(resolve_warmup_steps(0, 0.1, 100), 10);
    EXPECT_EQ(resolve_warmup_steps(0, 0.0, 100), 0);
}

TEST(Schedule, ParsesNamesAndRejectsUnknown) {
    EXPECT_EQ(parse_schedule_kind("cosine"), ScheduleKind::cosine);
    EXPECT_EQ(parse_schedule_kind("constant_with_warmup"), ScheduleKind::constant_with_warmup);
    EXPECT_STREQ(schedule_kind_name(ScheduleKind::linear), "linear");
    EXPECT_THROW(parse_schedule_kind("cosine_with_restarts"), pdsd::ConfigError);
}
