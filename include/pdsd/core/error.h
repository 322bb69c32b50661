// pdsd error hierarchy. Library code throws; cli/main.cpp catches once and maps
// the kind to an exit code (1 user/data error, 2 internal error, 130 interrupted).
//
// Every message names the artifact (file, record/line, tensor or key), what was
// expected, what was found, and a hint for the fix. Build them with ErrorInfo:
//
//   throw pdsd::IoError(ErrorInfo{path}.at("tensor 'lm_head.weight'")
//                          .expected("offsets inside the file")
//                          .found("end 4096 > file size 2048")
//                          .hint("the download is probably truncated"));
#pragma once

#include <stdexcept>
#include <string>

namespace pdsd {

// Structured parts of an error message; each part is optional.
struct ErrorInfo {
    std::string file;      // file or folder the problem is in
    std::string where;     // record index, line:column, tensor name, config key...
    std::string what;      // short statement of the problem
    std::string expected_;
    std::string found_;
    std::string hint_;

    ErrorInfo() = default;
    explicit ErrorInfo(std::string file_) : file(std::move(file_)) {}

    ErrorInfo& at(std::string w)       { where = std::move(w); return *this; }
    ErrorInfo& msg(std::string m)      { what = std::move(m); return *this; }
    ErrorInfo& expected(std::string e) { expected_ = std::move(e); return *this; }
    ErrorInfo& found(std::string f)    { found_ = std::move(f); return *this; }
    ErrorInfo& hint(std::string h)     { hint_ = std::move(h); return *this; }

    // "file: where: what (expected X, found Y)\n  hint: Z"
    std::string format() const;
};

// Exit codes used by main.
enum class ExitCode : int { ok = 0, user_error = 1, internal_error = 2, interrupted = 130 };

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
    explicit Error(const ErrorInfo& info) : std::runtime_error(info.format()), info_(info) {}
    const ErrorInfo& info() const { return info_; }
    virtual ExitCode exit_code() const { return ExitCode::user_error; }
    virtual const char* kind() const { return "error"; }

private:
    ErrorInfo info_;
};

#define PDSD_DECLARE_ERROR(Name, kind_name)                                         \
    class Name : public Error {                                                     \
    public:                                                                         \
        using Error::Error;                                                         \
        const char* kind() const override { return kind_name; }                     \
    }

PDSD_DECLARE_ERROR(ConfigError, "config error");   // YAML/CLI/HF config problems
PDSD_DECLARE_ERROR(DataError, "data error");       // datasets, documents, records
PDSD_DECLARE_ERROR(IoError, "I/O error");          // files: missing, unreadable, corrupt
PDSD_DECLARE_ERROR(FormatError, "format error");   // safetensors/JSON structure is wrong
PDSD_DECLARE_ERROR(ShapeError, "shape error");     // tensor shapes/dtypes do not match
PDSD_DECLARE_ERROR(UsageError, "usage error");     // bad command-line arguments
#undef PDSD_DECLARE_ERROR

// A bug in pdsd, not in the user's input.
class InternalError : public Error {
public:
    using Error::Error;
    ExitCode exit_code() const override { return ExitCode::internal_error; }
    const char* kind() const override { return "internal error"; }
};

// The user pressed Ctrl-C; long-running loops check pdsd::interrupt_requested().
class Interrupted : public Error {
public:
    Interrupted() : Error("interrupted") {}
    ExitCode exit_code() const override { return ExitCode::interrupted; }
    const char* kind() const override { return "interrupted"; }
};

// SIGINT handling: main installs the handler; loops poll the flag.
void install_interrupt_handler();
bool interrupt_requested();
void clear_interrupt();
void request_interrupt();          // what the handler calls (also used by tests)
void throw_if_interrupted();

}  // namespace pdsd
