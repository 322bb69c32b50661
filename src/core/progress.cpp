#include "pdsd/core/progress.h"

#include <cmath>
#include <sstream>

#include <unistd.h>

namespace pdsd {

namespace {
std::string fmt_seconds(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    long t = static_cast<long>(s + 0.5);
    std::ostringstream os;
    if (t >= 3600) os << t / 3600 << "h" << (t % 3600) / 60 << "m";
    else if (t >= 60) os << t / 60 << "m" << t % 60 << "s";
    else os << t << "s";
    return os.str();
}
}  // namespace

Progress::Progress(std::string label, uint64_t total, std::string unit, std::string rate_unit, Style style,
                   std::FILE* out)
    : label_(std::move(label)), unit_(std::move(unit)), rate_unit_(std::move(rate_unit)), total_(total),
      style_(style), out_(out) {
    if (style_ == Style::automatic) style_ = (out_ && ::isatty(::fileno(out_))) ? Style::bar : Style::plain;
    start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

double Progress::elapsed_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(uint64_t items, uint64_t secondary) {
    done_ += items;
    secondary_ += secondary;
    render(false);
}

void Progress::set_note(std::string note) { note_ = std::move(note); }

std::string Progress::status_line() const {
    std::ostringstream os;
    double el = elapsed_s();
    os << label_ << ": " << done_;
    if (total_) os << "/" << total_;
    os << " " << unit_;
    if (!rate_unit_.empty()) {
        os << ", " << secondary_ << " " << rate_unit_;
        if (el > 0) os << ", " << static_cast<long>(secondary_ / el) << " " << rate_unit_ << "/s";
    }
    if (total_ && done_ > 0 && done_ < total_) os << ", ETA " << fmt_seconds(el / done_ * (total_ - done_));
    else if (finished_ || (total_ && done_ >= total_)) os << ", " << fmt_seconds(el);
    if (!note_.empty()) os << " (" << note_ << ")";
    return os.str();
}

void Progress::render(bool final) {
    if (style_ == Style::silent || !out_) return;
    auto now = std::chrono::steady_clock::now();
    double since = std::chrono::duration<double>(now - last_draw_).count();
    if (style_ == Style::bar) {
        if (!final && since < 0.1) return;
        std::string bar;
        if (total_) {
            const int width = 24;
            int filled = static_cast<int>(width * std::min<double>(1.0, double(done_) / double(total_)));
            bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
        }
        std::fprintf(out_, "\r\033[K%s%s%s", bar.c_str(), status_line().c_str(), final ? "\n" : "");
    } else {
        if (!final && since < plain_interval_s) return;
        std::fprintf(out_, "%s\n", status_line().c_str());
    }
    std::fflush(out_);
    last_draw_ = now;
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    render(true);
}

}  // namespace pdsd
