#include "pdsd/core/json_io.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"

namespace pdsd {

TextPos text_pos(std::string_view text, size_t offset) {
    TextPos pos;
    offset = std::min(offset, text.size());
    for (size_t i = 0; i < offset; ++i) {
        if (text[i] == '\n') {
            ++pos.line;
            pos.column = 1;
        } else {
            ++pos.column;
        }
    }
    return pos;
}

nlohmann::json parse_json(std::string_view text, const std::string& source) {
    try {
        return nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error& e) {
        // e.byte is 1-based and points just past the offending character.
        TextPos pos = text_pos(text, e.byte > 0 ? e.byte - 1 : 0);
        std::string what = e.what();
        // nlohmann prefixes "[json.exception.parse_error.101] parse error at line L, column C: "
        auto colon = what.find(": ", what.find("parse error"));
        if (colon != std::string::npos) what = what.substr(colon + 2);
        throw FormatError(ErrorInfo{source}
                              .at("line " + std::to_string(pos.line) + ", column " + std::to_string(pos.column))
                              .msg("invalid JSON: " + what)
                              .hint("fix the syntax at that position (a missing comma or quote is the usual cause)"));
    } catch (const nlohmann::json::exception& e) {
        // Not a syntax error but a value nlohmann cannot hold, e.g. "1e999" (number overflow).
        throw FormatError(ErrorInfo{source}.msg(std::string("invalid JSON: ") + e.what())
                              .hint("a number is out of range for a 64-bit integer or double"));
    }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

}  // namespace pdsd
