// Typed configuration from YAML files and `--key value` overrides.
//
// A ConfigSchema binds key names to fields of a plain struct with defaults, so a
// config is typed in C++ and spelled with LLaMA-Factory's key names on disk:
//
//   SftArgs args;                          // defaults live in the struct
//   ConfigSchema schema = sft_schema(args);
//   schema.load_yaml("configs/sft.yaml");  // unknown key -> ConfigError + did-you-mean
//   schema.apply_overrides({"--learning_rate", "1e-4", "lora_rank=16"});
//
// Unlike LLaMA-Factory, which ignores misspelt keys, an unknown key is an error.
// Keys that mean nothing to pdsd (deepspeed, flash_attn...) are registered with
// add_ignored() and produce one log line saying what pdsd does instead.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pdsd {

class ConfigSchema {
public:
    explicit ConfigSchema(std::string name) : name_(std::move(name)) {}

    // Bind a key to a field; `help` says what it does (shown by --help-config).
    void add(const std::string& key, bool* field, std::string help);
    void add(const std::string& key, int64_t* field, std::string help);
    void add(const std::string& key, double* field, std::string help);
    void add(const std::string& key, std::string* field, std::string help);
    void add(const std::string& key, std::optional<std::string>* field, std::string help);
    void add(const std::string& key, std::optional<int64_t>* field, std::string help);
    // A list: a YAML sequence or a comma-separated string ("q_proj,v_proj").
    void add(const std::string& key, std::vector<std::string>* field, std::string help);
    // Accepted and ignored; `note` says what pdsd does instead.
    void add_ignored(const std::string& key, std::string note);

    // Set one key from text (command line) or from YAML; `source` names the origin in errors.
    void set(const std::string& key, const std::string& value, const std::string& source);

    // Every top-level key of a YAML mapping; throws ConfigError (file, key, expected, hint).
    void load_yaml(const std::string& path);
    void load_yaml_text(const std::string& text, const std::string& source);

    // LLaMA-Factory-style overrides: "--key value", "--key=value" or "key=value".
    void apply_overrides(const std::vector<std::string>& args);

    // Keys explicitly set (by YAML or overrides), in the order they were set.
    const std::vector<std::string>& keys_set() const { return set_keys_; }
    bool was_set(const std::string& key) const;

    std::vector<std::string> keys() const;           // every known key, ignored ones included
    nlohmann::json to_json() const;                   // resolved values of every bound key
    std::string describe() const;                     // key: help, one per line

private:
    enum class Kind { Bool, Int, Double, String, OptString, OptInt, List, Ignored };
    struct Entry {
        std::string key;
        Kind kind;
        void* field;
        std::string help;
    };
    const Entry* find(const std::string& key) const;
    std::string canonical_key(const std::string& key) const;  // key, or its snake_case twin when known
    [[noreturn]] void unknown_key(const std::string& key, const std::string& source) const;

    std::string name_;
    std::vector<Entry> entries_;
    std::vector<std::string> set_keys_;
};

// The closest candidate within a small edit distance, or "" when none is close.
std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

// Parse helpers shared with other readers; throw ConfigError naming `where`.
bool parse_bool(const std::string& text, const std::string& where);
int64_t parse_int(const std::string& text, const std::string& where);
double parse_double(const std::string& text, const std::string& where);
// Range-checked integers (hostile input: "-3" for a count must not wrap to 2^64-3
// when it is later cast to size_t). ConfigError "where: integer out of range
// (expected an integer in [lo, hi], found '...')".
int64_t parse_int_in_range(const std::string& text, const std::string& where, int64_t lo, int64_t hi);
// The same for a value already parsed (CLI11 options, YAML schema fields); returns it.
int64_t check_int_in_range(int64_t value, const std::string& where, int64_t lo, int64_t hi);
std::vector<std::string> split_list(const std::string& text);  // "a, b,c" -> {a, b, c}

}  // namespace pdsd
