// Document loaders: a file becomes one or more documents of UTF-8 text.
// txt/md: the text (Markdown is not parsed, like Chatchat's TextLoader);
// json: "key: value" lines of the leaf values; jsonl: the same per line, records
// separated by a blank line; csv: one document per row of "column: value" lines,
// never split (Chatchat's CSVLoader); html/htm: text without tags, scripts and
// styles, entities decoded, block elements on their own lines; docx: a line per
// paragraph, table rows as "cell | cell" lines; pdf (with poppler): the text layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pdsd::kb {

struct Document {
    std::string text;
    bool split = true;     // false for csv rows: stored as one chunk
};

struct LoadedFile {
    std::vector<Document> docs;
    std::string loader;    // "TextLoader", "CSVLoader", ...
    std::string encoding;  // what decode_text detected
    std::vector<std::string> warnings;
};

// Lowercased extension with dot (".md"); "" when none.
std::string file_extension(const std::string& path);
bool is_supported_extension(const std::string& ext);
std::vector<std::string> supported_extensions();
// Chatchat skips basenames starting with "temp", "tmp", ".", "~$".
bool is_skipped_name(const std::string& basename);

// Budgets of one file (hostile input): its size on disk, and the text extracted from it
// (a CSV row repeats the header's names, a JSON key repeats per array element, a docx
// part is decompressed). Over either: DataError, the file is marked failed.
constexpr uint64_t kMaxFileBytes = uint64_t{256} << 20;
constexpr size_t kMaxTextBytes = size_t{256} << 20;
void check_file_size(const std::string& name, uint64_t size);
void check_text_budget(const std::string& name, size_t text_bytes);

// Throws IoError (unreadable) or DataError (unsupported extension, malformed json).
LoadedFile load_file(const std::string& path);
// The same from bytes already read; `name` gives the extension and error context.
LoadedFile load_bytes(const std::string& name, const std::string& bytes);

// Exposed for tests.
std::string html_to_text(const std::string& html);
std::vector<std::vector<std::string>> parse_csv(const std::string& text);

}  // namespace pdsd::kb
