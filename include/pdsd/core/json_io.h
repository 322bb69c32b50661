// JSON reading with errors that point at the file, line and column.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace pdsd {

// 1-based line and column of byte `offset` in `text` (columns count bytes).
struct TextPos {
    size_t line = 1;
    size_t column = 1;
};
TextPos text_pos(std::string_view text, size_t offset);

// Parse `text`; a syntax error throws FormatError "source:line:col: ..." with a hint.
nlohmann::json parse_json(std::string_view text, const std::string& source);

// Read and parse a JSON file (IoError if unreadable, FormatError if malformed).
nlohmann::json read_json_file(const std::string& path);

}  // namespace pdsd
