// A chat session shared by `pdsd chat` (terminal) and `pdsd serve` (HTTP): history,
// the Qwen2.5 chat template, optional retrieval from a knowledge base, streamed text.
//
//   ChatSession s(&generator, &tokenizer, &kb, options);   // kb may be null: plain chat
//   Answer a = s.ask("如何安装？", [](std::string_view piece) { std::cout << piece; });
//
// Without a generator the session answers retrieval-only (Chatchat's return_direct):
// the answer is the retrieved chunks, and Answer::retrieval_only says so.
// Streamed pieces come from a chat::TextStream: they end on UTF-8 character boundaries (a
// Chinese character spans several byte-level tokens); concatenated they equal Answer::text,
// which is decode(generated ids, skip_special_tokens) cut at the first stop string.
// With a knowledge base the turn is rag::retrieve's (kept hits -> Chatchat's RAG prompt).
#pragma once

#include "pdsd/kb/knowledge_base.h"
#include "pdsd/model/generate.h"
#include "pdsd/rag/prompt.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pdsd::chat {

struct ChatOptions {
    std::optional<std::string> system;          // unset: the template's default system prompt
    model::GenerationOptions generation;
    std::vector<std::string> stop;              // stop strings (cut from the answer)
    int64_t history_len = -1;                   // past turns kept in the prompt; -1 = all
    kb::SearchOptions search;                   // used when a knowledge base is attached
    rag::PromptTemplates templates;
};

struct Answer {
    std::string text;
    std::vector<int64_t> tokens;                // generated ids (eos included when hit)
    std::vector<kb::SearchHit> sources;         // kept hits, in prompt order
    model::StopReason reason = model::StopReason::length;
    int64_t prompt_tokens = 0;
    double prefill_seconds = 0;                 // prompt forward + first token
    double decode_seconds = 0;                  // every later token
    bool retrieval_only = false;
    bool interrupted = false;                   // stopped by Ctrl-C
};

using TextCallback = std::function<void(std::string_view piece)>;

class ChatSession {
public:
    // `generator`, `tokenizer`, `kb` are borrowed and may be null (see header comment);
    // a generator needs a tokenizer.
    ChatSession(model::Generator* generator, const tokenizer::Tokenizer* tokenizer, const kb::KnowledgeBase* kb,
                ChatOptions options);

    Answer ask(const std::string& question, const TextCallback& on_text = {});
    void reset() { history_.clear(); }
    const std::vector<tokenizer::ChatMessage>& history() const { return history_; }
    ChatOptions& options() { return options_; }

    // The full prompt text the model sees for `user_message` after the current history.
    std::string render_prompt(const std::string& user_message) const;

private:
    model::Generator* generator_;
    const tokenizer::Tokenizer* tokenizer_;
    const kb::KnowledgeBase* kb_;
    ChatOptions options_;
    std::vector<tokenizer::ChatMessage> history_;  // user/assistant pairs (raw question, answer)
};

}  // namespace pdsd::chat
