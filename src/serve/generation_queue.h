// The one generation worker of `pdsd serve` and its bounded FIFO queue (private to src/serve).
//
// Each request becomes a GenJob: chat messages + sampling options in, streamed text pieces and
// a final result out. Every job names the ServedModel it runs on (the one the request saw when
// it arrived); the worker runs one model's jobs per batch, so a model swap (POST
// /pdsd/models/load) takes effect between batches: jobs already queued or running finish on the
// model they started with, later requests get the new one, and the old model is freed when its
// last job or request lets go of it. Only the worker thread touches a generator (not
// thread-safe); the tokenizer is thread-safe, and request threads read it for counts.
#pragma once

#include "pdsd/model/generate.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace pdsd::serve {

// A chat model as the server runs it (chat::load_chat_model's pair and what /pdsd/models
// reports about it). Shared: the server's current model, each request and each job hold one.
struct ServedModel {
    std::string id;                                  // /v1/models, /health and the "model" of every answer
    std::string dir, adapter;                        // absolute folders; adapter "" = none
    std::string device, dtype, quant;                // as loaded (dtype "" = the loader's default)
    std::unique_ptr<tokenizer::Tokenizer> tokenizer;
    std::unique_ptr<model::Generator> generator;     // worker thread only
};

struct GenJob {
    std::shared_ptr<ServedModel> model;              // runs on this one (set before submit)
    // ---- input (set before submit) ----
    std::vector<tokenizer::ChatMessage> messages;   // rendered with the Qwen2.5 template, unless:
    std::optional<std::string> prompt;               // /v1/completions: raw text, tokenized as it is
    std::vector<int64_t> prompt_ids;                 // /v1/completions: token ids (used when non-empty)
    model::GenerationOptions options;
    std::vector<std::string> stop;                   // stop strings, cut from the text
    bool stream = false;                             // keep the pieces for next_piece()

    // ---- control ----
    std::atomic<bool> cancelled{false};              // the client went away: stop at the next token

    // ---- output (valid once finished) ----
    std::string text;                                // decoded answer, cut at the first stop string
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;                   // generated ids, eos included
    std::string finish_reason = "stop";              // "stop" | "length"
    std::string error;                               // non-empty: generation failed (message)
    int error_status = 500;
    std::string error_code;                          // OpenAI's error.code, e.g. "context_length_exceeded"
    std::chrono::steady_clock::time_point submitted, first_token;
    bool has_first_token = false;

    // Streaming: blocks until a piece is ready (true) or the job finished with no piece left
    // (false). `timeout` bounds one wait so the caller can check its connection.
    bool next_piece(std::string& piece, std::chrono::milliseconds timeout, bool& timed_out);
    void wait();                                     // until finished
    bool finished() const;

    // Worker side.
    void push_piece(std::string_view piece);
    void finish();

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> pieces_;
    bool finished_ = false;
};

struct QueueStats {
    std::atomic<int64_t> generated_tokens{0}, prompt_tokens{0}, rejected{0}, completed{0}, cancelled{0}, batches{0}, batch_rows{0};
};

class GenerationQueue {
public:
    // `capacity` counts waiting + running jobs. `max_batch` > 1: greedy jobs of one model waiting
    // together run as one batch of up to that many rows (generate_batch).
    GenerationQueue(size_t capacity, size_t max_batch, QueueStats* stats);
    ~GenerationQueue();

    // false when full (the caller answers 429). `job->model` must be set.
    bool try_submit(std::shared_ptr<GenJob> job);
    void set_paused(bool paused);
    void stop();   // cancels every job, joins the worker
    size_t depth() const;

private:
    void run();
    void execute(const std::vector<GenJob*>& jobs);

    size_t capacity_, max_batch_;
    QueueStats* stats_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<GenJob>> pending_;
    std::vector<std::shared_ptr<GenJob>> running_;
    bool paused_ = false, stopping_ = false;
    std::thread worker_;
};

}  // namespace pdsd::serve
