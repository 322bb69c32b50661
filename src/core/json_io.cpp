#include "pdsd/core/json_io.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"

#include <filesystem>

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

std::optional<JsonLimitViolation> find_json_limit_violation(std::string_view text, const JsonLimits& limits) {
    if (text.size() > limits.max_bytes)
        return JsonLimitViolation{0, "document of " + std::to_string(text.size()) + " bytes is larger than the limit of " +
                                         std::to_string(limits.max_bytes) + " bytes"};
    // One linear pass; only '[' and '{' outside strings open a level.
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limits.max_depth)
                return JsonLimitViolation{i, "nesting deeper than " + std::to_string(limits.max_depth) + " levels"};
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return std::nullopt;
}

namespace {

ErrorInfo at_offset(std::string_view text, const std::string& source, size_t offset) {
    TextPos pos = text_pos(text, offset);
    return ErrorInfo{source}.at("line " + std::to_string(pos.line) + ", column " + std::to_string(pos.column));
}

template <class Json>
Json parse_bounded(std::string_view text, const std::string& source, const JsonLimits& limits) {
    if (auto v = find_json_limit_violation(text, limits))
        throw FormatError(at_offset(text, source, v->offset).msg("JSON " + v->what)
                              .hint("this is not a file pdsd writes or reads from real tools; check where it came from"));
    try {
        return Json::parse(text.begin(), text.end());
    } catch (const typename Json::parse_error& e) {
        // e.byte is 1-based and points just past the offending character.
        std::string what = e.what();
        // nlohmann prefixes "[json.exception.parse_error.101] parse error at line L, column C: "
        auto colon = what.find(": ", what.find("parse error"));
        if (colon != std::string::npos) what = what.substr(colon + 2);
        throw FormatError(at_offset(text, source, e.byte > 0 ? e.byte - 1 : 0)
                              .msg("invalid JSON: " + what)
                              .hint("fix the syntax at that position (a missing comma or quote is the usual cause)"));
    } catch (const typename Json::exception& e) {
        // Not a syntax error but a value nlohmann cannot hold, e.g. "1e999" (number overflow).
        throw FormatError(ErrorInfo{source}.msg(std::string("invalid JSON: ") + e.what())
                              .hint("a number is out of range for a 64-bit integer or double"));
    }
}

}  // namespace

nlohmann::json parse_json_bounded(std::string_view text, const std::string& source, const JsonLimits& limits) {
    return parse_bounded<nlohmann::json>(text, source, limits);
}

nlohmann::ordered_json parse_ordered_json_bounded(std::string_view text, const std::string& source,
                                                  const JsonLimits& limits) {
    return parse_bounded<nlohmann::ordered_json>(text, source, limits);
}

nlohmann::json parse_json(std::string_view text, const std::string& source) {
    return parse_bounded<nlohmann::json>(text, source, JsonLimits{});
}

nlohmann::json read_json_file(const std::string& path, const JsonLimits& limits) {
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    if (!ec && size > limits.max_bytes)
        throw FormatError(ErrorInfo{path}.msg("JSON file too large").expected("at most " + std::to_string(limits.max_bytes) + " bytes")
                              .found(std::to_string(size) + " bytes"));
    return parse_bounded<nlohmann::json>(read_file(path), path, limits);
}

int64_t json_int_in_range(const nlohmann::json& obj, const std::string& key, const std::string& source, int64_t lo,
                          int64_t hi, std::optional<int64_t> fallback) {
    std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) {
        if (fallback) return *fallback;
        throw FormatError(ErrorInfo{source}.at("\"" + key + "\"").msg("missing field").expected(range).found("no such key"));
    }
    const nlohmann::json& v = obj[key];
    auto shown = [&] {
        std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return std::string(v.type_name()) + " " + (s.size() > 40 ? s.substr(0, 37) + "..." : s);
    };
    // Integers only: 3.0, "3" and true are refused (JSON floats and strings do not wrap silently).
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        if (hi >= 0 && u <= static_cast<uint64_t>(hi) && static_cast<int64_t>(u) >= lo) return static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
        int64_t i = v.get<int64_t>();
        if (i >= lo && i <= hi) return i;
    }
    throw FormatError(ErrorInfo{source}.at("\"" + key + "\"").msg(v.is_number_integer() ? "integer out of range" : "wrong type")
                          .expected(range).found(shown()));
}

}  // namespace pdsd
