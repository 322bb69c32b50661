// JSON reading with errors that point at the file, line and column, and with a
// depth and size budget checked before nlohmann builds anything (hostile input:
// a 60 KB file of '[' is 30,000 levels; pdsd's recursive walks of such a value,
// and nlohmann's own dump/copy, overflow the stack).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pdsd {

// 1-based line and column of byte `offset` in `text` (columns count bytes).
struct TextPos {
    size_t line = 1;
    size_t column = 1;
};
TextPos text_pos(std::string_view text, size_t offset);

// Budgets of one JSON document. 512 levels is far past any real config, dataset
// record or tokenizer.json (they nest < 10); the size cap keeps a DOM (about 10-20x
// the text for small values) well inside memory.
struct JsonLimits {
    size_t max_depth = 512;
    size_t max_bytes = size_t{256} << 20;   // 256 MiB of text: a DOM of small values stays under ~4 GiB
};

// The first place `text` breaks `limits`: byte offset and a message such as
// "nesting deeper than 512 levels". Brackets inside strings do not count. Syntax is
// not checked here (the parser reports it).
struct JsonLimitViolation {
    size_t offset = 0;
    std::string what;
};
std::optional<JsonLimitViolation> find_json_limit_violation(std::string_view text, const JsonLimits& limits = {});

// Parse `text` within `limits`; a syntax error or a broken budget throws FormatError
// "source: line L, column C: ..." with a hint.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& source, const JsonLimits& limits = {});
nlohmann::ordered_json parse_ordered_json_bounded(std::string_view text, const std::string& source,
                                                  const JsonLimits& limits = {});
// The same with the default limits.
nlohmann::json parse_json(std::string_view text, const std::string& source);

// Read and parse a JSON file (IoError if unreadable, FormatError if malformed or over the
// limits; the size is checked before the file is read).
nlohmann::json read_json_file(const std::string& path, const JsonLimits& limits = {});

// An integer member `key` of object `obj` in [lo, hi]: FormatError naming source, key,
// the range and what was found (a string, a float, a negative number...). Missing:
// `fallback` if given, else an error.
int64_t json_int_in_range(const nlohmann::json& obj, const std::string& key, const std::string& source, int64_t lo,
                          int64_t hi, std::optional<int64_t> fallback = std::nullopt);

}  // namespace pdsd
