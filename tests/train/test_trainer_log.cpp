// trainer_state.json and trainer_log.jsonl in HF / LLaMA-Factory's formats.
#include "pdsd/core/file_util.h"
#include "pdsd/train/trainer_log.h"
#include "test_util.h"

#include <gtest/gtest.h>

using namespace pdsd::train;

TEST(TrainerLog, TimedeltaLikePython) {
    EXPECT_EQ(format_timedelta(0), "0:00:00");
    EXPECT_EQ(format_timedelta(7.9), "0:00:07");  // int() truncates
    EXPECT_EQ(format_timedelta(3723), "1:02:03");
    EXPECT_EQ(format_timedelta(86400 + 3723), "1 day, 1:02:03");
    EXPECT_EQ(format_timedelta(2 * 86400), "2 days, 0:00:00");
    EXPECT_EQ(format_timedelta(-5), "0:00:00");
}

TEST(TrainerLog, LineHasLlamaFactoryFieldsInOrder) {
    nlohmann::json rec = {{"epoch", 0.5}, {"grad_norm", 1.25}, {"learning_rate", 2.5e-6}, {"loss", 1.2345}, {"step", 10}};
    auto line = trainer_log_line(rec, 10, 30, 65.0, 10, 4000, 4000);
    EXPECT_EQ(python_json_dumps(line),
              "{\"current_steps\": 10, \"total_steps\": 30, \"loss\": 1.2345, \"lr\": 2.5e-06, \"epoch\": 0.5, "
              "\"percentage\": 33.33, \"elapsed_time\": \"0:01:05\", \"remaining_time\": \"0:02:10\", "
              "\"throughput\": 61.54, \"total_tokens\": 4000}");
}

TEST(TrainerLog, EvalLineAndNoTokens) {
    nlohmann::json rec = {{"epoch", 1.0}, {"eval_loss", 0.75}, {"step", 20}};
    auto line = trainer_log_line(rec, 20, 20, 10.0, 20, 0, 0);
    EXPECT_EQ(line["eval_loss"], 0.75);
    EXPECT_FALSE(line.contains("loss"));
    EXPECT_FALSE(line.contains("throughput"));  // LF leaves it out when no tokens are counted
    EXPECT_EQ(line["percentage"], 100.0);
    EXPECT_EQ(line["remaining_time"], "0:00:00");
}

TEST(TrainerLog, StateRoundTripsWithHFKeys) {
    pdsd::test::TempDir dir;
    TrainerState s;
    s.global_step = 3;
    s.max_steps = 9;
    s.epoch = 1.0;
    s.num_train_epochs = 3;
    s.logging_steps = 1;
    s.num_input_tokens_seen = 123;
    s.log_history.push_back({{"epoch", 0.33}, {"loss", 2.0}, {"step", 1}});
    s.save(dir.file("trainer_state.json"));
    auto j = nlohmann::json::parse(pdsd::read_file(dir.file("trainer_state.json")));
    for (const char* key : {"best_metric", "epoch", "global_step", "log_history", "logging_steps", "max_steps",
                            "num_input_tokens_seen", "num_train_epochs", "save_steps", "total_flos", "train_batch_size"}) {
        EXPECT_TRUE(j.contains(key)) << key;
    }
    auto back = TrainerState::load(dir.file("trainer_state.json"));
    EXPECT_EQ(back.global_step, 3);
    EXPECT_EQ(back.max_steps, 9);
    EXPECT_EQ(back.num_input_tokens_seen, 123);
    ASSERT_EQ(back.log_history.size(), 1u);
    EXPECT_EQ(back.log_history[0]["loss"], 2.0);
}

TEST(TrainerLog, FileAppendsAndTruncatesForResume) {
    pdsd::test::TempDir dir;
    TrainerLogFile f(dir.file("trainer_log.jsonl"));
    for (int s = 1; s <= 4; ++s) {
        nlohmann::ordered_json l;
        l["current_steps"] = s;
        l["loss"] = 1.0 / s;
        f.append(l);
    }
    pdsd::write_file_atomic(dir.file("x"), "");
    {  // a half-written line from a killed run
        std::string text = pdsd::read_file(f.path()) + "{\"current_st";
        pdsd::write_file_atomic(f.path(), text);
    }
    f.truncate_after(2);
    EXPECT_EQ(pdsd::read_file(f.path()), "{\"current_steps\": 1, \"loss\": 1.0}\n{\"current_steps\": 2, \"loss\": 0.5}\n");
}
