// Shared helpers for pdsd tests: fixture paths and scratch folders.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace pdsd::test {

// tests/fixtures (vendored), or $PDSD_FIXTURES when set.
inline std::string fixtures() {
    if (const char* env = std::getenv("PDSD_FIXTURES")) return env;
    return PDSD_FIXTURES_DIR;
}
inline std::string golden(const std::string& rel) { return fixtures() + "/golden/" + rel; }
inline std::string source_dir() { return PDSD_SOURCE_DIR; }

// A fresh empty folder under the system temp dir, removed when the object dies.
class TempDir {
public:
    TempDir() {
        auto base = std::filesystem::temp_directory_path();
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::string name = std::string("pdsd-") + (info ? info->name() : "test") + "-" + std::to_string(::getpid());
        path_ = base / name;
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~TempDir() { std::error_code ec; std::filesystem::remove_all(path_, ec); }
    std::string str() const { return path_.string(); }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

}  // namespace pdsd::test
