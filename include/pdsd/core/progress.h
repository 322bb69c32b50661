// Progress reporting for long loops (KB rebuilds, training, exports), torch-free.
//
// On a TTY (stderr) it redraws one line in place: "label [####....] 3/10 files,
// 1234 chunks, 560 chunks/s, ETA 5s". When stderr is not a TTY (piped, CI, logs)
// it prints a plain line at most every `plain_interval_s` seconds and a final line,
// so logs stay readable. Output goes to stderr only; stdout stays program output.
//
//   Progress p("kb samples", files.size(), "files", "chunks");
//   for (...) { ...; p.advance(1, n_chunks); }
//   p.finish();
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace pdsd {

class Progress {
public:
    enum class Style { automatic, bar, plain, silent };

    // `total`: number of main items (0 = unknown, no ETA); `unit`: their name ("files");
    // `rate_unit`: name of the secondary counter whose rate is shown ("chunks"), may be "".
    Progress(std::string label, uint64_t total, std::string unit, std::string rate_unit = "",
             Style style = Style::automatic, std::FILE* out = stderr);
    ~Progress();  // calls finish() if not done yet
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Add `items` main items and `secondary` secondary units (chunks, tokens...).
    void advance(uint64_t items, uint64_t secondary = 0);
    // A short note shown after the counters (current file name...).
    void set_note(std::string note);
    // Final line (always printed unless silent). Idempotent.
    void finish();

    uint64_t done() const { return done_; }
    uint64_t secondary() const { return secondary_; }
    double elapsed_s() const;
    // The status text without bar or carriage return (for tests and plain lines).
    std::string status_line() const;

    double plain_interval_s = 2.0;

private:
    void render(bool final);
    std::string label_, unit_, rate_unit_, note_;
    uint64_t total_ = 0, done_ = 0, secondary_ = 0;
    Style style_;
    std::FILE* out_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace pdsd
