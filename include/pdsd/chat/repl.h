// The terminal REPL's habits, after Ollama's `ollama run`: a line editor with history,
// `"""` blocks for multi-line messages, and slash commands that change the session.
//
//   LineReader in(history_path());             // libedit on a terminal, plain lines otherwise
//   while (auto msg = read_message(in)) {       // nullopt: end of input (Ctrl-D)
//       ReplReply r = run_command(*msg, session);
//       if (r.action == ReplAction::exit) break;
//       if (r.action == ReplAction::ask) session.ask(*msg, ...);
//       else std::cerr << r.output;
//   }
//
// Commands (Ollama's names; sampling parameters also by their HF names):
//   /? /help                  list the commands
//   /set parameter NAME VALUE temperature, top_p, top_k, repeat_penalty|repetition_penalty,
//                             num_predict|max_new_tokens, seed, stop (several words = several stops)
//   /set system TEXT          system prompt (clears the history, as a new conversation)
//   /set verbose | quiet      show / hide the tokens/s line after each answer
//   /show parameters | system | info
//   /clear /reset             forget the conversation
//   /bye /exit /quit          leave
#pragma once

#include "pdsd/chat/session.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace pdsd::chat {

// Reads lines from stdin: with libedit (when built in and stdin is a terminal) the line can be
// edited, and lines are kept in a history file shared across runs (up and down recall them).
// read() returns nullopt at end of input; Ctrl-C at the prompt throws pdsd::Interrupted.
class LineReader {
public:
    explicit LineReader(std::string history_file = "");  // "": no history file
    ~LineReader();
    LineReader(const LineReader&) = delete;
    LineReader& operator=(const LineReader&) = delete;

    std::optional<std::string> read(const std::string& prompt);
    void remember(const std::string& entry);  // add to the history (and its file)
    bool editing() const;                     // true when libedit drives the terminal

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ~/.pdsd/history ($PDSD_HISTORY overrides; "" when HOME is unset).
std::string default_history_path();

// One message: a line, or the lines between `"""` and the next `"""` (Ollama's multi-line
// form; text after the opening quotes is the first line, text before the closing ones the
// last). `read_line(prompt)` returns nullopt at end of input; an unclosed block at end of
// input is returned as it stands.
using ReadLine = std::function<std::optional<std::string>(const std::string& prompt)>;
std::optional<std::string> read_message(const ReadLine& read_line, const std::string& prompt = ">>> ",
                                        const std::string& continuation = "... ");

enum class ReplAction { ask, handled, exit };
struct ReplReply {
    ReplAction action = ReplAction::ask;
    std::string output;  // what to show the user (for handled commands)
};

// Settings the REPL keeps beside the session.
struct ReplState {
    bool verbose = true;  // tokens/s after each answer
};

// A line starting with '/' is a command; anything else (and a path-like first word such as
// "/usr/bin/env") is a message to ask. A bad command or value is answered in `output` (the
// REPL goes on), as Ollama does.
ReplReply run_command(const std::string& line, ChatSession& session, ReplState& state);

// "42 tokens, 18.3 tokens/s (first token after 0.21 s)": the line shown after an answer.
std::string answer_stats(const Answer& a);

}  // namespace pdsd::chat
