// Training logs in the formats LLaMA-Factory users and tools read. Torch-free.
//
//  * trainer_state.json: HF TrainerState (global_step, max_steps, epoch, log_history, ...).
//    log_history records look like HF's:
//      train: {"epoch", "grad_norm", "learning_rate", "loss", "step", "num_input_tokens_seen"}
//      eval:  {"epoch", "eval_loss", "eval_runtime", "eval_samples_per_second",
//              "eval_steps_per_second", "step"}
//      end:   {"epoch", "step", "total_flos", "train_loss", "train_runtime",
//              "train_samples_per_second", "train_steps_per_second"}
//  * trainer_log.jsonl: one line per log record, LLaMA-Factory's LogCallback.on_log fields
//    current_steps, total_steps, loss, eval_loss, lr, epoch, percentage, elapsed_time,
//    remaining_time, throughput, total_tokens (absent fields are left out, like LF).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pdsd::train {

// Python's str(datetime.timedelta(seconds=int(seconds))): "0:00:07", "12:03:04",
// "1 day, 2:03:04", "3 days, 0:00:00". Negative inputs clamp to 0.
std::string format_timedelta(double seconds);

// Python's round(x, digits) for log values (half away from zero; differs from Python's
// banker's rounding only on exact binary ties, which do not occur for measured values).
double round_to(double x, int digits);

struct TrainerState {
    int64_t global_step = 0;
    int64_t max_steps = 0;
    double epoch = 0.0;
    double num_train_epochs = 0.0;
    int64_t logging_steps = 500;
    int64_t save_steps = 500;
    int64_t eval_steps = 500;
    int64_t train_batch_size = 8;      // per-device micro-batch size, as HF stores it
    int64_t num_input_tokens_seen = 0;
    double total_flos = 0.0;
    std::vector<nlohmann::json> log_history;

    nlohmann::json to_json() const;
    // Reads HF's trainer_state.json (unknown keys ignored). FormatError names the key.
    static TrainerState from_json(const nlohmann::json& j, const std::string& source);
    void save(const std::string& path) const;  // atomic, 2-space indent like HF
    static TrainerState load(const std::string& path);
};

// Builds LLaMA-Factory's trainer_log.jsonl line for the newest log_history record.
// `elapsed_s`: seconds since this process started training; `steps_done_here`: optimizer
// steps done in that time (remaining_time = (total - current) * elapsed / steps_done_here;
// LF divides by current_steps, which is wrong after a resume). `tokens_seen`: 0 leaves
// throughput/total_tokens out, as LF does.
nlohmann::ordered_json trainer_log_line(const nlohmann::json& record, int64_t current_steps, int64_t total_steps,
                                double elapsed_s, int64_t steps_done_here, int64_t tokens_seen,
                                int64_t tokens_seen_here);

// A flat JSON object the way Python's json.dumps writes it: keys in insertion order,
// ", " and ": " separators (LF's trainer_log.jsonl lines).
std::string python_json_dumps(const nlohmann::ordered_json& object);

// Appends JSON lines to output_dir/trainer_log.jsonl (created if missing; each line flushed).
class TrainerLogFile {
public:
    explicit TrainerLogFile(std::string path);
    void append(const nlohmann::ordered_json& line);
    // Resume: drop lines whose current_steps > step (they are about to be logged again).
    void truncate_after(int64_t step);
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace pdsd::train
