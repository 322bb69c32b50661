// Logging to stderr (spdlog behind this facade); stdout carries program output only.
//
// This header deliberately does not include spdlog: libtorch's headers ship their own
// {fmt} (v12) while Debian's spdlog is built on fmt 9, so a translation unit that sees
// torch's include path must not include spdlog. Messages are plain strings; build them
// with log::cat(...) (ostream concatenation) where formatting is needed.
//
//   log::info("train", log::cat("step ", step, " loss ", loss));
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace pdsd::log {

enum class Level { trace, debug, info, warn, error, critical, off };

// Configure the stderr logger once, from main. `level`: trace, debug, info, warn,
// error, critical or off; anything else throws UsageError.
void init(const std::string& level);

bool enabled(Level level);
void write(Level level, std::string_view component, std::string_view message);

inline void debug(std::string_view component, std::string_view m) { write(Level::debug, component, m); }
inline void info(std::string_view component, std::string_view m) { write(Level::info, component, m); }
inline void warn(std::string_view component, std::string_view m) { write(Level::warn, component, m); }
inline void error(std::string_view component, std::string_view m) { write(Level::error, component, m); }

// Concatenate anything streamable: cat("loss ", 0.5, " at step ", 3).
template <typename... Args>
std::string cat(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

}  // namespace pdsd::log
