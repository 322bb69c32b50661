// Generation worker and bounded queue; see generation_queue.h.
#include "generation_queue.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <algorithm>

namespace pdsd::serve {

namespace {
// Length of the longest suffix of `text` that is a proper prefix of a stop string: those
// bytes are held back, since the next token may complete the stop string.
size_t stop_prefix_suffix(const std::string& text, const std::vector<std::string>& stops) {
    size_t best = 0;
    for (const auto& s : stops) {
        if (s.empty()) continue;
        for (size_t n = std::min(s.size() - 1, text.size()); n > best; --n) {
            if (text.compare(text.size() - n, n, s, 0, n) == 0) {
                best = n;
                break;
            }
        }
    }
    return best;
}

size_t find_stop(const std::string& text, const std::vector<std::string>& stops) {
    size_t first = std::string::npos;
    for (const auto& s : stops) {
        if (s.empty()) continue;
        first = std::min(first, text.find(s));
    }
    return first;
}
}  // namespace

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

GenerationQueue::GenerationQueue(model::Generator* generator, const tokenizer::Tokenizer* tokenizer, size_t capacity,
                                 QueueStats* stats)
    : generator_(generator), tokenizer_(tokenizer), capacity_(std::max<size_t>(capacity, 1)), stats_(stats) {
    worker_ = std::thread([this] { run(); });
}

GenerationQueue::~GenerationQueue() { stop(); }

bool GenerationQueue::try_submit(std::shared_ptr<GenJob> job) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_ || pending_.size() + (running_ ? 1 : 0) >= capacity_) {
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
    return pending_.size() + (running_ ? 1 : 0);
}

void GenerationQueue::stop() {
    std::deque<std::shared_ptr<GenJob>> left;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_ && !worker_.joinable()) return;
        stopping_ = true;
        left.swap(pending_);
        if (running_) running_->cancelled = true;
    }
    cv_.notify_all();
    for (auto& j : left) {
        j->error = "the server is shutting down";
        j->error_status = 503;
        j->finish();
    }
    if (worker_.joinable()) worker_.join();
}

void GenerationQueue::run() {
    while (true) {
        std::shared_ptr<GenJob> job;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || (!paused_ && !pending_.empty()); });
            if (stopping_) return;
            job = pending_.front();
            pending_.pop_front();
            running_ = job;
        }
        if (job->cancelled) {
            stats_->cancelled++;
        } else {
            try {
                execute(*job);
            } catch (const Error& e) {
                job->error = e.what();
                job->error_status = 400;   // a prompt the model cannot take (too long, ...)
            } catch (const std::exception& e) {
                job->error = e.what();
                job->error_status = 500;
                log::error("serve", std::string("generation failed: ") + e.what());
            }
        }
        {
            std::lock_guard<std::mutex> lk(mu_);
            running_.reset();
        }
        job->finish();
    }
}

void GenerationQueue::execute(GenJob& job) {
    std::vector<int32_t> ids32 = tokenizer_->encode(tokenizer::render_qwen_chat(job.messages, /*add_generation_prompt=*/true));
    std::vector<int64_t> prompt(ids32.begin(), ids32.end());
    job.prompt_tokens = static_cast<int64_t>(prompt.size());

    std::string emitted, pending;
    bool stopped_by_string = false;
    auto emit = [&](size_t n) {
        if (n == 0) return;
        job.push_piece(std::string_view(pending).substr(0, n));
        emitted.append(pending, 0, n);
        pending.erase(0, n);
    };
    auto on_token = [&](int64_t tok) {
        if (!job.has_first_token) {
            job.first_token = std::chrono::steady_clock::now();
            job.has_first_token = true;
        }
        if (job.cancelled) return false;
        if (tokenizer_->is_special(static_cast<tokenizer::TokenId>(tok))) return true;
        pending += tokenizer_->token_bytes(static_cast<tokenizer::TokenId>(tok));
        size_t hold = 0;
        if (!job.stop.empty()) {
            std::string all = emitted + pending;
            size_t stop = find_stop(all, job.stop);
            if (stop != std::string::npos) {
                emit(stop > emitted.size() ? tokenizer::complete_utf8_prefix(pending.substr(0, stop - emitted.size())) : 0);
                stopped_by_string = true;
                return false;
            }
            hold = stop_prefix_suffix(all, job.stop);
        }
        size_t ready = pending.size() > hold ? pending.size() - hold : 0;
        emit(tokenizer::complete_utf8_prefix(std::string_view(pending).substr(0, ready)));
        return true;
    };
    model::GenerationResult r = generator_->generate(prompt, job.options, on_token);

    std::vector<tokenizer::TokenId> gen(r.tokens.begin(), r.tokens.end());
    std::string text = tokenizer_->decode(gen, /*skip_special_tokens=*/true);
    size_t stop = find_stop(text, job.stop);
    if (stop != std::string::npos) text.resize(stop);
    // Whatever is still held back (the tail, or U+FFFD replacements of a cut character).
    if (!job.cancelled && text.size() > emitted.size() && text.compare(0, emitted.size(), emitted) == 0) {
        job.push_piece(std::string_view(text).substr(emitted.size()));
    }
    job.text = std::move(text);
    job.completion_tokens = static_cast<int64_t>(r.tokens.size());
    job.finish_reason = (r.reason == model::StopReason::length && !stopped_by_string) ? "length" : "stop";
    stats_->generated_tokens += job.completion_tokens;
    stats_->prompt_tokens += job.prompt_tokens;
    if (job.cancelled) stats_->cancelled++;
    else stats_->completed++;
}

}  // namespace pdsd::serve
