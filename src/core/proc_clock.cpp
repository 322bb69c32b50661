#include "pdsd/core/proc_clock.h"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

namespace pdsd::proc_clock {

namespace {
// Process start in seconds since boot (CLOCK_BOOTTIME's origin), or -1 if unknown.
double start_since_boot() {
    static const double start = [] {
        std::ifstream in("/proc/self/stat");
        std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // Field 2 (comm) may contain spaces and ')': fields after the last ')' are fixed.
        size_t rp = s.rfind(')');
        if (rp == std::string::npos) return -1.0;
        std::istringstream rest(s.substr(rp + 2));
        std::string field;
        // Fields 3..22 follow; starttime is field 22, i.e. the 20th after ')'.
        for (int i = 3; i <= 22; ++i) {
            if (!(rest >> field)) return -1.0;
        }
        long ticks = sysconf(_SC_CLK_TCK);
        if (ticks <= 0) return -1.0;
        return std::strtod(field.c_str(), nullptr) / static_cast<double>(ticks);
    }();
    return start;
}
}  // namespace

Times now() {
    Times t;
    double start = start_since_boot();
    timespec ts{};
    if (start >= 0 && clock_gettime(CLOCK_BOOTTIME, &ts) == 0) {
        t.wall_ms = (static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9 - start) * 1e3;
    }
    rusage ru{};
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        auto ms = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) * 1e-3; };
        t.cpu_ms = ms(ru.ru_utime) + ms(ru.ru_stime);
    }
    return t;
}

std::string stamp() {
    Times t = now();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f ms (cpu %.0f ms)", t.wall_ms, t.cpu_ms);
    return buf;
}

}  // namespace pdsd::proc_clock
