#include "pdsd/chat/repl.h"

#include "pdsd/core/error.h"

#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cwchar>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <poll.h>
#include <unistd.h>

#ifdef PDSD_HAVE_LIBEDIT
#include <histedit.h>
#endif

namespace pdsd::chat {

namespace fs = std::filesystem;

// ---- line reader -------------------------------------------------------------------------

struct LineReader::Impl {
    std::string history_file;
    std::string prompt;
#ifdef PDSD_HAVE_LIBEDIT
    EditLine* el = nullptr;
    History* hist = nullptr;
    HistEvent ev{};

    static char* prompt_fn(EditLine* el) {
        void* self = nullptr;
        el_get(el, EL_CLIENTDATA, &self);
        return const_cast<char*>(static_cast<Impl*>(self)->prompt.c_str());
    }
    // Our own character reader: libedit's retries a read interrupted by Ctrl-C, and its signal
    // handling (EL_SIGNAL) re-raises the signal to the whole process group. Returns 1 with a
    // character, 0 at end of input, -1 when Ctrl-C was pressed. It waits in poll() with a short
    // timeout and looks at the interrupt flag each time: a Ctrl-C that lands after the prompt
    // is printed but before the read starts sets the flag without interrupting any call, and a
    // plain blocking read would then wait for the next key.
    static int getc_fn(EditLine*, wchar_t* out) {
        std::mbstate_t st{};
        while (true) {
            if (interrupt_requested()) {
                *out = L'\0';
                return -1;
            }
            pollfd pfd{STDIN_FILENO, POLLIN, 0};
            int ready = ::poll(&pfd, 1, 100);  // ms
            if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
            if (ready < 0) return 0;
            char c = 0;
            ssize_t r = ::read(STDIN_FILENO, &c, 1);
            if (r == 0) return 0;
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;  // the flag is looked at above
                return 0;
            }
            wchar_t wc = 0;
            size_t k = std::mbrtowc(&wc, &c, 1, &st);
            if (k == static_cast<size_t>(-2)) continue;  // more bytes of a multi-byte character
            if (k == static_cast<size_t>(-1)) {          // not a character here: drop the byte
                st = {};
                continue;
            }
            *out = wc;
            return 1;
        }
    }
#endif
};

LineReader::LineReader(std::string history_file) : impl_(std::make_unique<Impl>()) {
    impl_->history_file = std::move(history_file);
#ifdef PDSD_HAVE_LIBEDIT
    if (!::isatty(STDIN_FILENO)) return;
    // libedit edits characters of the locale's encoding: Chinese input needs a UTF-8 LC_CTYPE.
    const char* loc = std::setlocale(LC_CTYPE, "");
    if (!loc || std::string(loc).find("UTF-8") == std::string::npos) std::setlocale(LC_CTYPE, "C.UTF-8");
    Impl& m = *impl_;
    m.el = el_init("pdsd", stdin, stderr, stderr);
    if (!m.el) return;
    el_set(m.el, EL_CLIENTDATA, static_cast<void*>(&m));
    el_set(m.el, EL_PROMPT, &Impl::prompt_fn);
    el_set(m.el, EL_EDITOR, "emacs");
    el_set(m.el, EL_SIGNAL, 0);
    el_set(m.el, EL_GETCFN, &Impl::getc_fn);
    m.hist = history_init();
    history(m.hist, &m.ev, H_SETSIZE, 1000);
    history(m.hist, &m.ev, H_SETUNIQUE, 1);
    if (!m.history_file.empty()) history(m.hist, &m.ev, H_LOAD, m.history_file.c_str());
    el_set(m.el, EL_HIST, history, m.hist);
    el_source(m.el, nullptr);  // ~/.editrc, as other libedit programs
#endif
}

LineReader::~LineReader() {
#ifdef PDSD_HAVE_LIBEDIT
    if (impl_->hist) history_end(impl_->hist);
    if (impl_->el) el_end(impl_->el);
#endif
}

bool LineReader::editing() const {
#ifdef PDSD_HAVE_LIBEDIT
    return impl_->el != nullptr;
#else
    return false;
#endif
}

std::optional<std::string> LineReader::read(const std::string& prompt) {
#ifdef PDSD_HAVE_LIBEDIT
    if (impl_->el) {
        impl_->prompt = prompt;
        int n = 0;
        const char* line = el_gets(impl_->el, &n);
        if (interrupt_requested()) {
            std::fputc('\n', stderr);
            throw Interrupted();
        }
        if (!line) return std::nullopt;
        std::string s(line, static_cast<size_t>(n));
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        return s;
    }
#endif
    if (::isatty(STDIN_FILENO)) std::fprintf(stderr, "%s", prompt.c_str());
    std::string s;
    if (!std::getline(std::cin, s)) {
        if (interrupt_requested()) throw Interrupted();  // Ctrl-C at the prompt: exit 130
        return std::nullopt;
    }
    return s;
}

void LineReader::remember(const std::string& entry) {
#ifdef PDSD_HAVE_LIBEDIT
    Impl& m = *impl_;
    if (!m.hist || entry.empty()) return;
    history(m.hist, &m.ev, H_ENTER, entry.c_str());
    if (m.history_file.empty()) return;
    std::error_code ec;
    fs::create_directories(fs::path(m.history_file).parent_path(), ec);
    history(m.hist, &m.ev, H_SAVE, m.history_file.c_str());  // best effort: no file, no history
#else
    (void)entry;
#endif
}

std::string default_history_path() {
    if (const char* p = std::getenv("PDSD_HISTORY")) return p;
    const char* home = std::getenv("HOME");
    if (!home || !*home) return "";
    return (fs::path(home) / ".pdsd" / "history").string();
}

// ---- messages ----------------------------------------------------------------------------

std::optional<std::string> read_message(const ReadLine& read_line, const std::string& prompt,
                                        const std::string& continuation) {
    std::optional<std::string> line = read_line(prompt);
    if (!line || line->rfind("\"\"\"", 0) != 0) return line;
    // A """ block: the first line's text after the quotes, then lines up to the closing quotes.
    std::string text = line->substr(3);
    size_t close = text.find("\"\"\"");
    if (close != std::string::npos) return text.substr(0, close);  // """one line"""
    while (auto next = read_line(continuation)) {
        close = next->find("\"\"\"");
        text += "\n" + (close == std::string::npos ? *next : next->substr(0, close));
        if (close != std::string::npos) break;
    }
    if (!text.empty() && text.front() == '\n') text.erase(0, 1);  // `"""` alone on the first line
    return text;
}

// ---- commands ----------------------------------------------------------------------------

namespace {

const char* kHelp =
    "Available commands:\n"
    "  /set parameter NAME VALUE  set a sampling parameter: temperature, top_p, top_k,\n"
    "                             repeat_penalty (repetition_penalty), num_predict (max_new_tokens),\n"
    "                             seed, stop (each word one stop string)\n"
    "  /set system TEXT           set the system prompt (starts a new conversation)\n"
    "  /set verbose | quiet       show / hide tokens/s after each answer\n"
    "  /show parameters | system | info\n"
    "  /clear, /reset             forget the conversation\n"
    "  /bye, /exit, /quit         leave (also Ctrl-D; Ctrl-C at the prompt exits with 130)\n"
    "  /?, /help                  this list\n"
    "Use \"\"\" to begin and end a multi-line message. Ctrl-C stops an answer.\n";

std::vector<std::string> words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// The text after the first `n` words of `line`.
std::string rest_after(const std::string& line, size_t n) {
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
        at = line.find_first_not_of(" \t", at);
        at = line.find_first_of(" \t", at);
        if (at == std::string::npos) return "";
    }
    at = line.find_first_not_of(" \t", at);
    return at == std::string::npos ? "" : line.substr(at);
}

template <class T>
std::optional<T> parse_number(const std::string& v) {
    std::istringstream in(v);
    T x{};
    if (!(in >> x) || !in.eof()) return std::nullopt;
    return x;
}

std::string set_parameter(const std::vector<std::string>& w, ChatSession& session) {
    if (w.size() < 4) return "usage: /set parameter NAME VALUE (see /?)\n";
    const std::string& name = w[2];
    const std::string& value = w[3];
    model::GenerationOptions& g = session.options().generation;
    auto bad = [&](const char* expected) {
        return "couldn't set '" + name + "': expected " + expected + ", found '" + value + "'\n";
    };
    if (name == "temperature") {
        auto x = parse_number<double>(value);
        if (!x || *x < 0) return bad("a number >= 0");
        g.temperature = *x;
        g.do_sample = *x > 0;  // 0 = greedy, as --temperature 0
    } else if (name == "top_p") {
        auto x = parse_number<double>(value);
        if (!x || *x <= 0 || *x > 1) return bad("a number in (0, 1]");
        g.top_p = *x;
    } else if (name == "top_k") {
        auto x = parse_number<int64_t>(value);
        if (!x || *x < 0) return bad("an integer >= 0");
        g.top_k = *x;
    } else if (name == "repeat_penalty" || name == "repetition_penalty") {
        auto x = parse_number<double>(value);
        if (!x || *x <= 0) return bad("a number > 0");
        g.repetition_penalty = *x;
    } else if (name == "num_predict" || name == "max_new_tokens") {
        auto x = parse_number<int64_t>(value);
        if (!x || *x <= 0) return bad("an integer > 0");
        g.max_new_tokens = *x;
    } else if (name == "seed") {
        auto x = parse_number<uint64_t>(value);
        if (!x) return bad("an integer >= 0");
        g.seed = *x;
    } else if (name == "stop") {
        session.options().stop.assign(w.begin() + 3, w.end());
    } else {
        return "unknown parameter '" + name + "' (see /?)\n";
    }
    std::string shown = value;
    for (size_t i = 4; name == "stop" && i < w.size(); ++i) shown += " " + w[i];
    return "Set parameter '" + name + "' to '" + shown + "'\n";
}

std::string show_parameters(ChatSession& session) {
    const ChatOptions& o = session.options();
    const model::GenerationOptions& g = o.generation;
    std::ostringstream out;
    auto row = [&](const char* name, const auto& v) {
        out << "  " << name;
        for (size_t i = std::string(name).size(); i < 20; ++i) out << ' ';
        if (v) out << *v << "\n";
        else out << "(generation_config.json)\n";
    };
    out << "Model defined parameters, with what /set changed:\n";
    row("temperature", g.temperature);
    row("top_p", g.top_p);
    row("top_k", g.top_k);
    row("repeat_penalty", g.repetition_penalty);
    row("num_predict", g.max_new_tokens);
    row("seed", g.seed);
    out << "  stop                ";
    for (const auto& s : o.stop) out << '"' << s << "\" ";
    out << (o.stop.empty() ? "(eos only)\n" : "\n");
    out << "  history_len         " << (o.history_len < 0 ? std::string("all") : std::to_string(o.history_len)) << "\n";
    return out.str();
}

std::string show(const std::vector<std::string>& w, ChatSession& session) {
    const std::string what = w.size() > 1 ? w[1] : "";
    if (what == "parameters") return show_parameters(session);
    if (what == "system") {
        const auto& sys = session.options().system;
        return (sys ? *sys : std::string("(Qwen2.5's default system prompt)")) + "\n";
    }
    if (what == "info") {
        return "  turns in history    " + std::to_string(session.history().size() / 2) + "\n";
    }
    return "usage: /show parameters | system | info\n";
}

}  // namespace

ReplReply run_command(const std::string& line, ChatSession& session, ReplState& state) {
    std::vector<std::string> w = words(line);
    if (w.empty() || w[0][0] != '/') return {ReplAction::ask, ""};
    const std::string& cmd = w[0];
    if (cmd == "/bye" || cmd == "/exit" || cmd == "/quit") return {ReplAction::exit, ""};
    if (cmd == "/?" || cmd == "/help") return {ReplAction::handled, kHelp};
    if (cmd == "/clear" || cmd == "/reset") {
        session.reset();
        return {ReplAction::handled, "Cleared session context\n"};
    }
    if (cmd == "/show") return {ReplAction::handled, show(w, session)};
    if (cmd == "/set") {
        const std::string what = w.size() > 1 ? w[1] : "";
        if (what == "parameter") return {ReplAction::handled, set_parameter(w, session)};
        if (what == "system") {
            std::string text = rest_after(line, 2);
            if (text.empty()) return {ReplAction::handled, "usage: /set system TEXT\n"};
            session.options().system = text;
            session.reset();
            return {ReplAction::handled, "Set system message.\n"};
        }
        if (what == "verbose" || what == "quiet") {
            state.verbose = what == "verbose";
            return {ReplAction::handled, std::string("Set '") + what + "' mode.\n"};
        }
        return {ReplAction::handled, "usage: /set parameter NAME VALUE | system TEXT | verbose | quiet\n"};
    }
    // "/usr/bin/env 是什么？" is a question about a path, not a command.
    if (cmd.find('/', 1) != std::string::npos) return {ReplAction::ask, ""};
    return {ReplAction::handled, "Unknown command '" + cmd + "'. Type /? for help\n"};
}

std::string answer_stats(const Answer& a) {
    auto n = static_cast<int64_t>(a.tokens.size());
    char buf[160];
    // Decode rate over the tokens after the first (the first one waits for the prompt's prefill).
    double rate = (n > 1 && a.decode_seconds > 0) ? static_cast<double>(n - 1) / a.decode_seconds : 0.0;
    std::snprintf(buf, sizeof buf, "%lld tokens, %.1f tokens/s (first token after %.2f s, prompt %lld tokens)",
                  static_cast<long long>(n), rate, a.prefill_seconds, static_cast<long long>(a.prompt_tokens));
    return buf;
}

}  // namespace pdsd::chat
