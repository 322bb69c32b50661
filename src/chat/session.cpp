#include "pdsd/chat/session.h"
#include "pdsd/chat/stop_strings.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/core/proc_clock.h"

#include <algorithm>

namespace pdsd::chat {

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

ChatSession::ChatSession(model::Generator* generator, const tokenizer::Tokenizer* tokenizer,
                         const kb::KnowledgeBase* kb, ChatOptions options)
    : generator_(generator), tokenizer_(tokenizer), kb_(kb), options_(std::move(options)) {
    if (generator_ && !tokenizer_) throw InternalError("ChatSession: a generator needs a tokenizer");
}

std::string ChatSession::render_prompt(const std::string& user_message) const {
    std::vector<tokenizer::ChatMessage> messages;
    if (options_.system) messages.push_back({"system", *options_.system});
    // The last history_len turns (a turn = a user + an assistant message).
    size_t keep = history_.size();
    if (options_.history_len >= 0) keep = std::min(keep, static_cast<size_t>(options_.history_len) * 2);
    messages.insert(messages.end(), history_.end() - static_cast<std::ptrdiff_t>(keep), history_.end());
    messages.push_back({"user", user_message});
    return tokenizer::render_qwen_chat(messages, /*add_generation_prompt=*/true);
}

Answer ChatSession::ask(const std::string& question, const TextCallback& on_text) {
    Answer answer;
    std::string user_message = question;
    if (kb_) {
        for (auto& h : kb_->search(question, options_.search)) {
            if (h.kept) answer.sources.push_back(std::move(h));
        }
        user_message = rag::build_user_message(question, answer.sources, options_.templates);
    }
    if (!generator_) {
        // Retrieval-only (Chatchat's return_direct): the retrieved chunks are the answer.
        answer.retrieval_only = true;
        answer.text = rag::format_sources(answer.sources, /*with_text=*/true);
        if (on_text) on_text(answer.text);
        return answer;
    }

    std::vector<int32_t> ids32 = tokenizer_->encode(render_prompt(user_message));
    std::vector<int64_t> prompt(ids32.begin(), ids32.end());
    if (log::enabled(log::Level::debug)) {
        log::debug("chat", log::cat("prompt encoded (", prompt.size(), " tokens) at ", proc_clock::stamp()));
    }
    bool first_token = true;
    std::string emitted, pending;
    auto emit = [&](size_t n) {
        if (n == 0) return;
        if (on_text) on_text(std::string_view(pending).substr(0, n));
        emitted.append(pending, 0, n);
        pending.erase(0, n);
    };
    auto on_token = [&](int64_t tok) {
        if (first_token && log::enabled(log::Level::debug)) {
            log::debug("chat", "first token at " + proc_clock::stamp());  // time to first token
        }
        first_token = false;
        if (interrupt_requested()) {
            answer.interrupted = true;
            return false;
        }
        if (tokenizer_->is_special(static_cast<tokenizer::TokenId>(tok))) return true;
        pending += tokenizer_->token_bytes(static_cast<tokenizer::TokenId>(tok));
        size_t hold = 0;
        if (!options_.stop.empty()) {  // the joined text is only needed to look for stop strings
            std::string all = emitted + pending;
            size_t stop = find_stop(all, options_.stop);
            if (stop != std::string::npos) {
                emit(stop > emitted.size() ? tokenizer::complete_utf8_prefix(pending.substr(0, stop - emitted.size())) : 0);
                return false;
            }
            hold = stop_prefix_suffix(all, options_.stop);
        }
        size_t ready = pending.size() > hold ? pending.size() - hold : 0;
        emit(tokenizer::complete_utf8_prefix(std::string_view(pending).substr(0, ready)));
        return true;
    };
    model::GenerationResult r = generator_->generate(prompt, options_.generation, on_token);
    if (answer.interrupted) clear_interrupt();

    std::vector<tokenizer::TokenId> gen(r.tokens.begin(), r.tokens.end());
    std::string text = tokenizer_->decode(gen, /*skip_special_tokens=*/true);
    size_t stop = find_stop(text, options_.stop);
    if (stop != std::string::npos) text.resize(stop);
    // Emit whatever is still held back (the tail, or U+FFFD replacements of a cut character).
    if (on_text && text.size() > emitted.size() && text.compare(0, emitted.size(), emitted) == 0) {
        on_text(std::string_view(text).substr(emitted.size()));
    }
    answer.text = text;
    answer.tokens = std::move(r.tokens);
    answer.reason = r.reason;
    answer.prompt_tokens = r.prompt_tokens;
    history_.push_back({"user", question});
    history_.push_back({"assistant", answer.text});
    return answer;
}

}  // namespace pdsd::chat
