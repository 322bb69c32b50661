// trainer_state.json and trainer_log.jsonl; see trainer_log.h.
#include "pdsd/train/trainer_log.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace pdsd::train {

std::string format_timedelta(double seconds) {
    int64_t s = seconds > 0 ? static_cast<int64_t>(seconds) : 0;  // int() truncates
    const int64_t days = s / 86400;
    s %= 86400;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
    if (days == 0) return buf;
    return std::to_string(days) + (days == 1 ? " day, " : " days, ") + buf;
}

double round_to(double x, int digits) {
    const double f = std::pow(10.0, digits);
    return std::round(x * f) / f;
}

nlohmann::json TrainerState::to_json() const {
    nlohmann::json j;
    j["best_global_step"] = nullptr;
    j["best_metric"] = nullptr;
    j["best_model_checkpoint"] = nullptr;
    j["epoch"] = epoch;
    j["eval_steps"] = eval_steps;
    j["global_step"] = global_step;
    j["is_hyper_param_search"] = false;
    j["is_local_process_zero"] = true;
    j["is_world_process_zero"] = true;
    j["log_history"] = log_history;
    j["logging_steps"] = logging_steps;
    j["max_steps"] = max_steps;
    j["num_input_tokens_seen"] = num_input_tokens_seen;
    j["num_train_epochs"] = num_train_epochs;
    j["save_steps"] = save_steps;
    j["stateful_callbacks"] = nlohmann::json::object();
    j["total_flos"] = total_flos;
    j["train_batch_size"] = train_batch_size;
    j["trial_name"] = nullptr;
    j["trial_params"] = nullptr;
    return j;
}

TrainerState TrainerState::from_json(const nlohmann::json& j, const std::string& source) {
    TrainerState s;
    auto num = [&](const char* key, auto& field) {
        if (!j.contains(key) || j[key].is_null()) return;
        if (!j[key].is_number()) {
            throw FormatError(ErrorInfo{source}.at(key).expected("a number").found(j[key].dump()));
        }
        field = j[key].get<std::decay_t<decltype(field)>>();
    };
    if (!j.is_object()) throw FormatError(ErrorInfo{source}.expected("a JSON object").found(j.type_name()));
    num("global_step", s.global_step);
    num("max_steps", s.max_steps);
    num("epoch", s.epoch);
    num("num_train_epochs", s.num_train_epochs);
    num("logging_steps", s.logging_steps);
    num("save_steps", s.save_steps);
    num("eval_steps", s.eval_steps);
    num("train_batch_size", s.train_batch_size);
    num("num_input_tokens_seen", s.num_input_tokens_seen);
    num("total_flos", s.total_flos);
    if (j.contains("log_history")) {
        if (!j["log_history"].is_array()) {
            throw FormatError(ErrorInfo{source}.at("log_history").expected("an array").found(j["log_history"].type_name()));
        }
        for (const auto& r : j["log_history"]) s.log_history.push_back(r);
    }
    return s;
}

void TrainerState::save(const std::string& path) const { write_file_atomic(path, to_json().dump(2) + "\n"); }

TrainerState TrainerState::load(const std::string& path) { return from_json(read_json_file(path), path); }

nlohmann::ordered_json trainer_log_line(const nlohmann::json& record, int64_t current_steps, int64_t total_steps,
                                double elapsed_s, int64_t steps_done_here, int64_t tokens_seen,
                                int64_t tokens_seen_here) {
    nlohmann::ordered_json line = nlohmann::ordered_json::object();
    line["current_steps"] = current_steps;
    line["total_steps"] = total_steps;
    auto copy = [&](const char* from, const char* to) {
        if (record.contains(from) && !record[from].is_null()) line[to] = record[from];
    };
    copy("loss", "loss");
    copy("eval_loss", "eval_loss");
    copy("learning_rate", "lr");
    copy("epoch", "epoch");
    line["percentage"] = total_steps != 0 ? round_to(100.0 * static_cast<double>(current_steps) / static_cast<double>(total_steps), 2) : 100.0;
    const double per_step = steps_done_here > 0 ? elapsed_s / static_cast<double>(steps_done_here) : 0.0;
    line["elapsed_time"] = format_timedelta(elapsed_s);
    line["remaining_time"] = format_timedelta(static_cast<double>(total_steps - current_steps) * per_step);
    if (tokens_seen > 0) {
        line["throughput"] = elapsed_s > 0 ? round_to(static_cast<double>(tokens_seen_here) / elapsed_s, 2) : 0.0;
        line["total_tokens"] = tokens_seen;
    }
    return line;
}

TrainerLogFile::TrainerLogFile(std::string path) : path_(std::move(path)) {}

std::string python_json_dumps(const nlohmann::ordered_json& object) {
    if (!object.is_object()) return object.dump();
    std::string out = "{";
    bool first = true;
    for (auto it = object.begin(); it != object.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        out += nlohmann::json(it.key()).dump(-1, ' ', /*ensure_ascii=*/true) + ": " + it.value().dump(-1, ' ', true);
    }
    return out + "}";
}

void TrainerLogFile::append(const nlohmann::ordered_json& line) {
    std::ofstream out(path_, std::ios::app | std::ios::binary);
    if (!out) throw IoError(ErrorInfo{path_}.msg("cannot open for appending"));
    out << python_json_dumps(line) << '\n';
    out.flush();
    if (!out) throw IoError(ErrorInfo{path_}.msg("write failed").hint("is the disk full?"));
}

void TrainerLogFile::truncate_after(int64_t step) {
    if (!std::filesystem::exists(path_)) return;
    std::istringstream in(read_file(path_));
    std::string kept, line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) continue;  // a half-written last line from a killed run
        if (j.contains("current_steps") && j["current_steps"].is_number() && j["current_steps"].get<int64_t>() > step) continue;
        kept += line + "\n";
    }
    write_file_atomic(path_, kept);
}

}  // namespace pdsd::train
