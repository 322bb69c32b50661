// Generation worker and bounded queue; see generation_queue.h.
#include "generation_queue.h"

#include "pdsd/chat/text_stream.h"
#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <algorithm>

namespace pdsd::serve {


// ---- GenJob ---------------------------------------------------------------------------------

bool GenJob::next_piece(std::string& piece, std::chrono::milliseconds timeout, bool& timed_out) {
    std::unique_lock<std::mutex> lk(mu_);
    timed_out = !cv_.wait_for(lk, timeout, [&] { return !pieces_.empty() || finished_; });
    if (timed_out) return false;
    if (pieces_.empty()) return false;  // finished
    piece = std::move(pieces_.front());
    pieces_.pop_front();
    return true;
}

void GenJob::wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return finished_; });
}

bool GenJob::finished() const {
    std::lock_guard<std::mutex> lk(mu_);
    return finished_;
}

void GenJob::push_piece(std::string_view piece) {
    if (!stream || piece.empty()) return;
    {
        std::lock_guard<std::mutex> lk(mu_);
        pieces_.emplace_back(piece);
    }
    cv_.notify_all();
}

void GenJob::finish() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        finished_ = true;
    }
    cv_.notify_all();
}

// ---- GenerationQueue ------------------------------------------------------------------------

GenerationQueue::GenerationQueue(size_t capacity, size_t max_batch, QueueStats* stats)
    : capacity_(std::max<size_t>(capacity, 1)), max_batch_(std::max<size_t>(max_batch, 1)), stats_(stats) {
    worker_ = std::thread([this] { run(); });
}

GenerationQueue::~GenerationQueue() { stop(); }

bool GenerationQueue::try_submit(std::shared_ptr<GenJob> job) {
    if (!job->model) throw InternalError(ErrorInfo{}.msg("a generation job without a model was submitted"));
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_ || pending_.size() + running_.size() >= capacity_) {
            stats_->rejected++;
            return false;
        }
        job->submitted = std::chrono::steady_clock::now();
        pending_.push_back(std::move(job));
    }
    cv_.notify_all();
    return true;
}

void GenerationQueue::set_paused(bool paused) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        paused_ = paused;
    }
    cv_.notify_all();
}

size_t GenerationQueue::depth() const {
    std::lock_guard<std::mutex> lk(mu_);
    return pending_.size() + running_.size();
}

void GenerationQueue::stop() {
    std::deque<std::shared_ptr<GenJob>> left;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_ && !worker_.joinable()) return;
        stopping_ = true;
        left.swap(pending_);
        for (auto& j : running_) j->cancelled = true;
    }
    cv_.notify_all();
    for (auto& j : left) {
        j->error = "the server is shutting down";
        j->error_status = 503;
        j->finish();
    }
    if (worker_.joinable()) worker_.join();
}

namespace {
// Batchable with other requests: greedy (sampled rows would share one random stream, so their
// seeds could not be honoured) and on the same model as the batch's first job.
bool batchable(const GenJob& j) { return j.options.do_sample.has_value() && !*j.options.do_sample; }
bool batchable_with(const GenJob& first, const GenJob& j) { return batchable(j) && j.model == first.model; }
}  // namespace

void GenerationQueue::run() {
    while (true) {
        std::vector<std::shared_ptr<GenJob>> batch;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || (!paused_ && !pending_.empty()); });
            if (stopping_) return;
            batch.push_back(pending_.front());
            pending_.pop_front();
            // Greedy requests of one model waiting together run as one batch (up to max_batch_ rows).
            if (max_batch_ > 1 && batchable(*batch[0])) {
                for (auto it = pending_.begin(); it != pending_.end() && batch.size() < max_batch_;) {
                    if (batchable_with(*batch[0], **it)) {
                        batch.push_back(*it);
                        it = pending_.erase(it);
                    } else {
                        ++it;
                    }
                }
            }
            running_ = batch;
        }
        std::vector<GenJob*> live;
        for (auto& j : batch) {
            if (j->cancelled) stats_->cancelled++;
            else live.push_back(j.get());
        }
        if (!live.empty()) {
            stats_->batches++;
            stats_->batch_rows += static_cast<int64_t>(live.size());
            try {
                execute(live);
            } catch (const Error& e) {
                for (auto* j : live) {
                    j->error = e.what();
                    j->error_status = 400;   // a prompt the model cannot take (too long, ...)
                }
            } catch (const std::exception& e) {
                log::error("serve", std::string("generation failed: ") + e.what());
                for (auto* j : live) {
                    j->error = e.what();
                    j->error_status = 500;
                }
            }
        }
        {
            std::lock_guard<std::mutex> lk(mu_);
            running_.clear();
        }
        for (auto& j : batch) j->finish();
    }
}

namespace {
// One row's stream: its tokens through a chat::TextStream into the job's pieces, until a stop
// string, a cancel or the row's own token limit.
struct RowStream {
    GenJob* job;
    chat::TextStream text;
    int64_t limit = -1;          // the row's max_new_tokens in a batch (-1: the generator's)
    int64_t count = 0;
    bool stopped_by_string = false;

    bool on_token(int64_t t) {
        ++count;
        if (!job->has_first_token) {
            job->first_token = std::chrono::steady_clock::now();
            job->has_first_token = true;
        }
        if (job->cancelled) return false;
        chat::StreamStep step = text.push(t);
        job->push_piece(step.piece);
        stopped_by_string = step.stopped;
        return !step.stopped && (limit < 0 || count < limit);
    }
    void finish(const model::GenerationResult& r, QueueStats& stats) {
        chat::StreamEnd end = text.finish(r.tokens);
        if (!job->cancelled) job->push_piece(end.tail);
        job->text = std::move(end.text);
        job->completion_tokens = static_cast<int64_t>(r.tokens.size());
        const bool hit_limit = limit >= 0 && count >= limit && r.reason != model::StopReason::eos;
        job->finish_reason = stopped_by_string ? "stop" : (r.reason == model::StopReason::length || hit_limit) ? "length" : "stop";
        stats.generated_tokens += job->completion_tokens;
        stats.prompt_tokens += job->prompt_tokens;
        if (job->cancelled) stats.cancelled++;
        else stats.completed++;
    }
};
}  // namespace

void GenerationQueue::execute(const std::vector<GenJob*>& all_jobs) {
    std::vector<std::vector<int64_t>> prompts;
    std::vector<RowStream> rows;
    std::vector<GenJob*> jobs;
    ServedModel& m = *all_jobs[0]->model;   // every job of a batch has this one (run())
    const int64_t context = m.generator->max_context();
    for (auto* j : all_jobs) {
        std::vector<int64_t> ids = j->prompt_ids;
        if (ids.empty()) {
            std::vector<int32_t> ids32 = m.tokenizer->encode(j->prompt ? *j->prompt : tokenizer::render_qwen_chat(j->messages, /*add_generation_prompt=*/true));
            ids.assign(ids32.begin(), ids32.end());
        }
        j->prompt_tokens = static_cast<int64_t>(ids.size());
        if (j->prompt_tokens >= context) {
            // No room for one new token: refuse, as OpenAI does, rather than answer "" with 200.
            j->error = "this model's maximum context length is " + std::to_string(context) + " tokens, but the " +
                       std::string(j->prompt || !j->prompt_ids.empty() ? "prompt is " : "messages are ") + std::to_string(j->prompt_tokens) +
                       " tokens; shorten the " + (j->prompt || !j->prompt_ids.empty() ? "prompt" : "messages or the history");
            j->error_status = 400;
            j->error_code = "context_length_exceeded";
            stats_->rejected++;
            continue;
        }
        jobs.push_back(j);
        prompts.push_back(std::move(ids));
        rows.push_back(RowStream{j, chat::TextStream(*m.tokenizer, j->stop)});
    }
    if (jobs.empty()) return;
    if (jobs.size() == 1) {
        // Alone: generate() keeps the KV cache of the shared prompt prefix between requests.
        model::GenerationResult r = m.generator->generate(prompts[0], jobs[0]->options, [&](int64_t t) { return rows[0].on_token(t); });
        rows[0].finish(r, *stats_);
        return;
    }
    // A greedy batch: one set of options; each row stops at its own max_tokens via its callback.
    model::GenerationOptions o = jobs[0]->options;
    bool unbounded = false;
    int64_t longest = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
        if (jobs[i]->options.max_new_tokens) {
            rows[i].limit = *jobs[i]->options.max_new_tokens;
            longest = std::max(longest, rows[i].limit);
        } else {
            unbounded = true;
        }
    }
    if (unbounded) o.max_new_tokens.reset();
    else o.max_new_tokens = longest;
    auto results = m.generator->generate_batch(prompts, o, [&](size_t row, int64_t t) { return rows[row].on_token(t); });
    for (size_t i = 0; i < jobs.size(); ++i) rows[i].finish(results[i], *stats_);
}

}  // namespace pdsd::serve
