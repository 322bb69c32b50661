#include "pdsd/core/log.h"

#include "pdsd/core/error.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace pdsd::log {

namespace {
std::shared_ptr<spdlog::logger> logger() {
    // Created on first use so that library code logging before init (tests) still works.
    static auto instance = [] {
        auto l = std::make_shared<spdlog::logger>("pdsd", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
        l->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
        l->set_level(spdlog::level::info);
        return l;
    }();
    return instance;
}
}  // namespace

void init(const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    // from_str maps unknown names to "off"; accept "off" only when asked for.
    if (lvl == spdlog::level::off && level != "off") {
        throw UsageError(ErrorInfo{}.at("--log-level").expected("trace|debug|info|warn|error|critical|off")
                             .found("'" + level + "'"));
    }
    logger()->set_level(lvl);
}

bool enabled(Level level) { return logger()->should_log(static_cast<spdlog::level::level_enum>(level)); }

void write(Level level, std::string_view component, std::string_view message) {
    auto lvl = static_cast<spdlog::level::level_enum>(level);
    if (!logger()->should_log(lvl)) return;
    if (component.empty()) logger()->log(lvl, "{}", message);
    else logger()->log(lvl, "[{}] {}", component, message);
}

}  // namespace pdsd::log
