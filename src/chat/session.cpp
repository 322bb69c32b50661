#include "pdsd/chat/session.h"
#include "pdsd/chat/text_stream.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/core/proc_clock.h"

#include <algorithm>

namespace pdsd::chat {

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
        rag::RagTurn turn = rag::retrieve(*kb_, question, options_.search, options_.templates);
        answer.sources = std::move(turn.sources);
        user_message = std::move(turn.user_message);
    }
    if (!generator_) {
        // Retrieval-only (Chatchat's return_direct): the retrieved chunks are the answer.
        answer.retrieval_only = true;
        answer.text = rag::reference_text(answer.sources, /*with_text=*/true);
        if (on_text) on_text(answer.text);
        return answer;
    }

    std::vector<int32_t> ids32 = tokenizer_->encode(render_prompt(user_message));
    std::vector<int64_t> prompt(ids32.begin(), ids32.end());
    if (log::enabled(log::Level::debug)) {
        log::debug("chat", log::cat("prompt encoded (", prompt.size(), " tokens) at ", proc_clock::stamp()));
    }
    bool first_token = true;
    TextStream stream(*tokenizer_, options_.stop);
    auto on_token = [&](int64_t tok) {
        if (first_token && log::enabled(log::Level::debug)) {
            log::debug("chat", "first token at " + proc_clock::stamp());  // time to first token
        }
        first_token = false;
        if (interrupt_requested()) {
            answer.interrupted = true;
            return false;
        }
        StreamStep step = stream.push(tok);
        if (on_text && !step.piece.empty()) on_text(step.piece);
        return !step.stopped;
    };
    model::GenerationResult r = generator_->generate(prompt, options_.generation, on_token);
    if (answer.interrupted) clear_interrupt();

    StreamEnd end = stream.finish(r.tokens);
    if (on_text && !end.tail.empty()) on_text(end.tail);
    answer.text = std::move(end.text);
    answer.tokens = std::move(r.tokens);
    answer.reason = r.reason;
    answer.prompt_tokens = r.prompt_tokens;
    answer.prefill_seconds = r.prefill_seconds;
    answer.decode_seconds = r.decode_seconds;
    history_.push_back({"user", question});
    history_.push_back({"assistant", answer.text});
    return answer;
}

}  // namespace pdsd::chat
