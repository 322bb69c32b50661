// SFT datasets registered in LLaMA-Factory's `dataset_info.json`, read from local json/jsonl
// files and converted to Conversations with LLaMA-Factory's converter semantics.
//
//   data::Problems problems;
//   data::Registry reg = data::Registry::load("data", problems);      // unknown keys -> problems
//   data::for_each_conversation(reg, {"alpaca_zh_helpdesk"}, problems,
//       [](const data::RecordRef& rec, const data::Conversation& c) { ... });
//   if (!problems.empty()) ...                                         // report them all
//
// Or, for training: `data::load_conversations("data", {"a", "b"})` throws one DataError that
// lists every problem.
//
// Differences from LLaMA-Factory, on purpose:
//  - unknown entry keys / columns / tags are errors with a did-you-mean (LF ignores them,
//    issue #7577 "format" vs "formatting");
//  - a record LF would skip with a warning ("Invalid role tag", "Invalid message count",
//    "Dropped invalid example") is a Problem naming the file and record index;
//  - hub sources (hf_hub_url, ms_hub_url, om_hub_url, script_url, cloud_file_name) are refused:
//    pdsd never touches the network;
//  - `num_samples` takes the first N records (repeating cyclically when N > size) instead of a
//    random permutation, so runs are reproducible.
//
// Memory: .jsonl files are read line by line; .json files must be one top-level array and are
// memory-mapped and split into elements by a small scanner, so only one record is parsed at a
// time (a 1 GB array costs page cache, not heap).
//
// Level 1 (data): includes core only; torch-free.
#pragma once

#include "pdsd/core/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::data {

// Roles after conversion (LLaMA-Factory's Role enum without system, which is lifted out).
enum class Role { user, assistant, observation, function };
const char* role_name(Role role);  // "user", "assistant", "observation", "function"

struct Message {
    Role role = Role::user;
    std::string content;
};

// One training example: prompt turns followed by exactly one response.
// messages alternate user|observation (even index) and assistant|function (odd index),
// and there is an even number of them (LF: prompt has odd length, response has one).
struct Conversation {
    std::string system;  // "" = none; the template then emits its default system prompt
    std::string tools;   // JSON text of a tool list, "" = none
    std::vector<Message> messages;
};

enum class Formatting { alpaca, sharegpt, openai };

// One entry of dataset_info.json, with LLaMA-Factory's defaults (DatasetAttr in parser.py).
struct DatasetAttr {
    std::string name;
    std::string file_name;  // relative to dataset_dir; a file or a folder of same-type files
    Formatting formatting = Formatting::alpaca;
    bool ranking = false;
    std::string subset;
    std::string split = "train";
    std::string folder;
    std::optional<int64_t> num_samples;
    // columns (alpaca: prompt/query/response/history; sharegpt/openai: messages)
    std::string prompt = "instruction", query = "input", response = "output", history, system, tools;
    std::string messages = "conversations";
    // tags (sharegpt; openai's defaults are role/content/user/assistant/tool/system... see parser)
    std::string role_tag = "from", content_tag = "value", user_tag = "human", assistant_tag = "gpt",
                observation_tag = "observation", function_tag = "function_call", system_tag = "system";
};

// One problem found while reading a registry or a dataset. `dataset` may be "" (registry-level).
struct Problem {
    std::string dataset;
    ErrorInfo info;  // file, where (record N / line L, column C / key), what, expected, found, hint
    // "dataset 'x': file: where: what (expected ..., found ...)\n  hint: ..."
    std::string format() const;
};
using Problems = std::vector<Problem>;

class Registry {
public:
    // Read `dataset_dir`/dataset_info.json. Entry-level problems (unknown keys, wrong types,
    // hub sources) are appended to `problems` and that entry is left out; a missing or
    // malformed registry file is one problem and an empty registry.
    static Registry load(const std::string& dataset_dir, Problems& problems);
    // Same from JSON text (tests); `source` names the file in problems.
    static Registry parse(const std::string& text, const std::string& source, const std::string& dataset_dir,
                          Problems& problems);

    const std::string& dataset_dir() const { return dir_; }
    const std::string& source() const { return source_; }
    // nullptr when unknown (or when its entry had problems).
    const DatasetAttr* find(const std::string& name) const;
    // Every entry name, including those left out because of problems.
    const std::vector<std::string>& names() const { return all_names_; }
    // Problem "undefined dataset" with did-you-mean when `name` is not an entry.
    bool check_defined(const std::string& name, Problems& problems) const;

private:
    std::string dir_, source_;
    std::map<std::string, DatasetAttr> entries_;
    std::vector<std::string> all_names_;
};

// Where a record came from.
struct RecordRef {
    std::string dataset;
    std::string file;
    int64_t index = 0;  // 0-based record index within the file
    int64_t line = 0;   // 1-based line where the record starts
};

// Convert one parsed record with LF's converter semantics. Problems (missing column,
// wrong type, bad role order, odd message count, empty response, leftover {{placeholder}})
// are appended; returns nullopt when the record is unusable.
std::optional<Conversation> convert_record(const DatasetAttr& attr, const nlohmann::ordered_json& record,
                                           const RecordRef& ref, Problems& problems);

// Stream every record of every file of `attr` through convert_record and call `fn` for each
// usable one. JSON syntax errors (line/column), non-UTF-8 bytes, unsupported file types and
// missing files become problems. Applies num_samples. Returns the number of records read.
using ConversationFn = std::function<void(const RecordRef&, const Conversation&)>;
int64_t for_each_conversation(const Registry& registry, const DatasetAttr& attr, Problems& problems,
                              const ConversationFn& fn);

// For several comma-separated / listed dataset names (undefined names become problems).
int64_t for_each_conversation(const Registry& registry, const std::vector<std::string>& names,
                              Problems& problems, const ConversationFn& fn);

// Training entry point: every conversation of `names` (concatenated in order, LF's "concat"
// mix strategy), at most `max_samples` per dataset when set. Throws DataError listing every
// problem when there is any.
std::vector<Conversation> load_conversations(const std::string& dataset_dir, const std::vector<std::string>& names,
                                             std::optional<int64_t> max_samples = std::nullopt);

// Offset of the first invalid UTF-8 byte in `text`, or npos when it is valid.
size_t find_invalid_utf8(std::string_view text);

}  // namespace pdsd::data
