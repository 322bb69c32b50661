// The REPL's pieces without a terminal: """ blocks and the slash commands (chat/repl.h).
#include "pdsd/chat/repl.h"

#include <gtest/gtest.h>

#include <deque>

using namespace pdsd;

namespace {

// A ReadLine over fixed lines; records the prompts it was asked with.
struct Lines {
    std::deque<std::string> lines;
    std::vector<std::string> prompts;
    chat::ReadLine reader() {
        return [this](const std::string& prompt) -> std::optional<std::string> {
            prompts.push_back(prompt);
            if (lines.empty()) return std::nullopt;
            std::string s = lines.front();
            lines.pop_front();
            return s;
        };
    }
};

}  // namespace

TEST(Repl, ReadMessageLineAndBlocks) {
    Lines in{{"plain line", "\"\"\"", "第一行", "second\"\"\"", "\"\"\"one line\"\"\"", "\"\"\"head", "tail\"\"\" ignored",
              "\"\"\"never closed", "more"}};
    auto read = in.reader();
    EXPECT_EQ(chat::read_message(read), "plain line");
    EXPECT_EQ(chat::read_message(read), "第一行\nsecond");
    EXPECT_EQ(chat::read_message(read), "one line");
    EXPECT_EQ(chat::read_message(read), "head\ntail");
    EXPECT_EQ(chat::read_message(read), "never closed\nmore");  // end of input inside a block
    EXPECT_EQ(chat::read_message(read), std::nullopt);
    // Continuation lines of a block get the "... " prompt.
    EXPECT_EQ(in.prompts[0], ">>> ");
    EXPECT_EQ(in.prompts[2], "... ");
}

TEST(Repl, SetShowClearExit) {
    chat::ChatSession s(nullptr, nullptr, nullptr, {});
    chat::ReplState st;
    EXPECT_EQ(chat::run_command("hello", s, st).action, chat::ReplAction::ask);
    EXPECT_EQ(chat::run_command("/usr/bin/env 是什么", s, st).action, chat::ReplAction::ask);  // a path, not a command
    EXPECT_EQ(chat::run_command("/bye", s, st).action, chat::ReplAction::exit);
    EXPECT_EQ(chat::run_command("/quit", s, st).action, chat::ReplAction::exit);

    auto r = chat::run_command("/set parameter temperature 0.5", s, st);
    EXPECT_EQ(r.action, chat::ReplAction::handled);
    EXPECT_EQ(s.options().generation.temperature, 0.5);
    EXPECT_EQ(s.options().generation.do_sample, true);
    chat::run_command("/set parameter temperature 0", s, st);
    EXPECT_EQ(s.options().generation.do_sample, false);  // 0 = greedy, as --temperature 0
    chat::run_command("/set parameter repeat_penalty 1.1", s, st);
    chat::run_command("/set parameter max_new_tokens 7", s, st);  // the HF name works too
    chat::run_command("/set parameter stop 。 END", s, st);
    EXPECT_EQ(s.options().generation.repetition_penalty, 1.1);
    EXPECT_EQ(s.options().generation.max_new_tokens, 7);
    EXPECT_EQ(s.options().stop, (std::vector<std::string>{"。", "END"}));

    // A bad value is answered and changes nothing.
    r = chat::run_command("/set parameter top_p 2", s, st);
    EXPECT_NE(r.output.find("expected a number in (0, 1], found '2'"), std::string::npos) << r.output;
    EXPECT_FALSE(s.options().generation.top_p.has_value());
    EXPECT_NE(chat::run_command("/set parameter nope 1", s, st).output.find("unknown parameter 'nope'"), std::string::npos);
    EXPECT_NE(chat::run_command("/frobnicate", s, st).output.find("Unknown command '/frobnicate'"), std::string::npos);

    std::string shown = chat::run_command("/show parameters", s, st).output;
    EXPECT_NE(shown.find("num_predict         7"), std::string::npos) << shown;
    EXPECT_NE(shown.find("top_p               (generation_config.json)"), std::string::npos) << shown;

    chat::run_command("/set system 你是一个助手。 Be brief.", s, st);
    EXPECT_EQ(s.options().system, "你是一个助手。 Be brief.");
    EXPECT_EQ(chat::run_command("/show system", s, st).output, "你是一个助手。 Be brief.\n");
    chat::run_command("/set quiet", s, st);
    EXPECT_FALSE(st.verbose);
    EXPECT_NE(chat::run_command("/?", s, st).output.find("/set parameter"), std::string::npos);
}

TEST(Repl, AnswerStats) {
    chat::Answer a;
    a.tokens = {1, 2, 3, 4, 5};
    a.prefill_seconds = 0.25;
    a.decode_seconds = 0.5;  // 4 tokens after the first in 0.5 s
    a.prompt_tokens = 12;
    EXPECT_EQ(chat::answer_stats(a), "5 tokens, 8.0 tokens/s (first token after 0.25 s, prompt 12 tokens)");
}
