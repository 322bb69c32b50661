// Process-relative clocks for start-up profiling (`pdsd chat -v` logs them per phase).
//
//   log::debug("chat", "tokenizer loaded at " + proc_clock::stamp());   // "812 ms (cpu 790 ms)"
//
// wall: milliseconds since the kernel started this process (/proc/self/stat starttime, so
// dynamic loading of libtorch before main() is included; resolution one clock tick,
// usually 10 ms). cpu: user + system CPU milliseconds of all threads so far (getrusage);
// under contention (other processes on the cores) cpu is the honest cost, wall is not.
//
// Torch-free (level 0).
#pragma once

#include <string>

namespace pdsd::proc_clock {

struct Times {
    double wall_ms = 0;  // since process start; 0 when /proc is unavailable
    double cpu_ms = 0;   // user + sys of the whole process
};

Times now();
// "<wall> ms (cpu <cpu> ms)", rounded to whole milliseconds.
std::string stamp();

}  // namespace pdsd::proc_clock
