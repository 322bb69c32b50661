#include "pdsd/core/error.h"

#include <atomic>
#include <csignal>

#include <pthread.h>
#include <signal.h>

namespace pdsd {

std::string ErrorInfo::format() const {
    std::string out;
    auto append = [&out](const std::string& part) {
        if (part.empty()) return;
        if (!out.empty()) out += ": ";
        out += part;
    };
    append(file);
    append(where);
    append(what);
    if (!expected_.empty() || !found_.empty()) {
        std::string ef;
        if (!expected_.empty()) ef += "expected " + expected_;
        if (!found_.empty()) ef += std::string(ef.empty() ? "" : ", ") + "found " + found_;
        if (what.empty()) append(ef);
        else out += " (" + ef + ")";
    }
    if (!hint_.empty()) out += "\n  hint: " + hint_;
    return out;
}

namespace {
std::atomic<bool> g_interrupted{false};  // the one piece of process state a signal handler may touch
extern "C" void on_sigint(int) { g_interrupted.store(true); }
}  // namespace

void install_interrupt_handler() {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: blocking reads (the chat prompt) return EINTR
    sigaction(SIGINT, &sa, nullptr);
    // A parent (a CI runner, a supervisor) may hand us SIGINT blocked; Ctrl-C must still stop
    // an answer and exit the REPL, so take it unblocked.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

bool interrupt_requested() { return g_interrupted.load(); }
void clear_interrupt() { g_interrupted.store(false); }
void request_interrupt() { g_interrupted.store(true); }

void throw_if_interrupted() {
    if (interrupt_requested()) throw Interrupted();
}

}  // namespace pdsd
