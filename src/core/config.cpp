#include "pdsd/core/config.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <sstream>

namespace pdsd {

namespace {
std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}
}  // namespace

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates) {
    std::string best;
    size_t best_d = std::max<size_t>(2, key.size() / 3) + 1;  // allow about one typo per three letters
    for (const auto& c : candidates) {
        size_t d = edit_distance(lower(key), lower(c));
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}

namespace {
bool is_bool_word(const std::string& text) {
    std::string t = lower(trim(text));
    return t == "true" || t == "false" || t == "1" || t == "0" || t == "yes" || t == "no" || t == "on" || t == "off";
}
}  // namespace

bool parse_bool(const std::string& text, const std::string& where) {
    std::string t = lower(trim(text));
    if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
    if (t == "false" || t == "0" || t == "no" || t == "off") return false;
    throw ConfigError(ErrorInfo{}.at(where).expected("true or false").found("'" + text + "'"));
}

int64_t parse_int(const std::string& text, const std::string& where) {
    std::string t = trim(text);
    try {
        size_t used = 0;
        long long v = std::stoll(t, &used);
        if (used == t.size()) return v;
    } catch (const std::exception&) {
    }
    throw ConfigError(ErrorInfo{}.at(where).expected("an integer").found("'" + text + "'"));
}

double parse_double(const std::string& text, const std::string& where) {
    std::string t = trim(text);
    try {
        size_t used = 0;
        double v = std::stod(t, &used);
        if (used == t.size()) return v;
    } catch (const std::exception&) {
    }
    throw ConfigError(ErrorInfo{}.at(where).expected("a number").found("'" + text + "'"));
}

int64_t check_int_in_range(int64_t value, const std::string& where, int64_t lo, int64_t hi) {
    if (value >= lo && value <= hi) return value;
    throw ConfigError(ErrorInfo{}.at(where).msg("integer out of range")
                          .expected("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]")
                          .found(std::to_string(value)));
}

int64_t parse_int_in_range(const std::string& text, const std::string& where, int64_t lo, int64_t hi) {
    // parse_int refuses non-integers and values past int64 ("99999999999999999999").
    return check_int_in_range(parse_int(text, where), where, lo, hi);
}

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        item = trim(item);
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

void ConfigSchema::add(const std::string& key, bool* f, std::string help) { entries_.push_back({key, Kind::Bool, f, std::move(help)}); }
void ConfigSchema::add(const std::string& key, int64_t* f, std::string help) { entries_.push_back({key, Kind::Int, f, std::move(help)}); }
void ConfigSchema::add(const std::string& key, double* f, std::string help) { entries_.push_back({key, Kind::Double, f, std::move(help)}); }
void ConfigSchema::add(const std::string& key, std::string* f, std::string help) { entries_.push_back({key, Kind::String, f, std::move(help)}); }
void ConfigSchema::add(const std::string& key, std::optional<std::string>* f, std::string help) {
    entries_.push_back({key, Kind::OptString, f, std::move(help)});
}
void ConfigSchema::add(const std::string& key, std::optional<int64_t>* f, std::string help) {
    entries_.push_back({key, Kind::OptInt, f, std::move(help)});
}
void ConfigSchema::add(const std::string& key, std::vector<std::string>* f, std::string help) {
    entries_.push_back({key, Kind::List, f, std::move(help)});
}
void ConfigSchema::add_ignored(const std::string& key, std::string note) {
    entries_.push_back({key, Kind::Ignored, nullptr, std::move(note)});
}

const ConfigSchema::Entry* ConfigSchema::find(const std::string& key) const {
    for (const auto& e : entries_) if (e.key == key) return &e;
    return nullptr;
}

std::vector<std::string> ConfigSchema::keys() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.key);
    return out;
}

bool ConfigSchema::was_set(const std::string& key) const {
    return std::find(set_keys_.begin(), set_keys_.end(), key) != set_keys_.end();
}

void ConfigSchema::unknown_key(const std::string& key, const std::string& source) const {
    std::string suggestion = did_you_mean(key, keys());
    ErrorInfo info{source};
    info.at("key '" + key + "'").msg("unknown " + name_ + " key");
    if (!suggestion.empty()) info.hint("did you mean '" + suggestion + "'? (LLaMA-Factory would silently ignore this key)");
    else info.hint("`pdsd " + name_ + " --help-config` lists every key");
    throw ConfigError(info);
}

void ConfigSchema::set(const std::string& key, const std::string& value, const std::string& source) {
    const Entry* e = find(key);
    if (!e) unknown_key(key, source);
    const std::string where = source + ": key '" + key + "'";
    switch (e->kind) {
        case Kind::Bool: *static_cast<bool*>(e->field) = parse_bool(value, where); break;
        case Kind::Int: *static_cast<int64_t*>(e->field) = parse_int(value, where); break;
        case Kind::Double: *static_cast<double*>(e->field) = parse_double(value, where); break;
        case Kind::String: *static_cast<std::string*>(e->field) = value; break;
        case Kind::OptString: {
            auto* f = static_cast<std::optional<std::string>*>(e->field);
            if (value.empty() || lower(value) == "null" || lower(value) == "none") f->reset();
            else *f = value;
            break;
        }
        case Kind::OptInt: {
            auto* f = static_cast<std::optional<int64_t>*>(e->field);
            if (value.empty() || lower(value) == "null" || lower(value) == "none") f->reset();
            else *f = parse_int(value, where);
            break;
        }
        case Kind::List: *static_cast<std::vector<std::string>*>(e->field) = split_list(value); break;
        case Kind::Ignored: log::info("config", source + ": '" + key + "' is accepted but not used: " + e->help); break;
    }
    if (!was_set(key)) set_keys_.push_back(key);
}

void ConfigSchema::load_yaml(const std::string& path) { load_yaml_text(read_file(path), path); }

void ConfigSchema::load_yaml_text(const std::string& text, const std::string& source) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& ex) {
        throw ConfigError(ErrorInfo{source}.at("line " + std::to_string(ex.mark.line + 1) + ", column " + std::to_string(ex.mark.column + 1))
                              .msg("invalid YAML: " + ex.msg));
    }
    if (root.IsNull()) return;  // an empty file sets nothing
    if (!root.IsMap()) throw ConfigError(ErrorInfo{source}.expected("a mapping of key: value").found("a YAML sequence or scalar"));
    for (const auto& kv : root) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        std::string where = source + ":" + std::to_string(kv.first.Mark().line + 1);
        if (v.IsSequence()) {
            const Entry* e = find(key);
            if (e && e->kind != Kind::List && e->kind != Kind::Ignored) {
                throw ConfigError(ErrorInfo{where}.at("key '" + key + "'").expected("a single value").found("a list"));
            }
            std::string joined;
            for (const auto& item : v) joined += (joined.empty() ? "" : ",") + item.as<std::string>();
            set(key, joined, where);
        } else if (v.IsMap()) {
            if (find(key) && find(key)->kind == Kind::Ignored) {
                set(key, "", where);
                continue;
            }
            if (!find(key)) unknown_key(key, where);
            throw ConfigError(ErrorInfo{where}.at("key '" + key + "'").expected("a single value").found("a mapping"));
        } else {
            set(key, v.IsNull() ? std::string() : v.as<std::string>(), where);
        }
    }
}

void ConfigSchema::apply_overrides(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        std::string key, value;
        if (a.rfind("--", 0) == 0) {
            a = a.substr(2);
            auto eq = a.find('=');
            if (eq != std::string::npos) {
                key = a.substr(0, eq);
                value = a.substr(eq + 1);
            } else {
                key = a;
                const Entry* e = find(canonical_key(key));
                // HfArgumentParser: a bool flag takes the next word only when it reads as a bool
                // ("--bf16 false"); bare, it means true. Ignored keys (--flash_attn,
                // --use_fast_tokenizer, --overwrite_cache, an empty $DS_CONFIG_PATH after
                // --deepspeed) may stand bare too.
                bool next_is_value = i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0 &&
                                     (!e || e->kind != Kind::Bool || is_bool_word(args[i + 1]));
                const bool may_be_bare = e && (e->kind == Kind::Bool || e->kind == Kind::Ignored);
                if (may_be_bare && !next_is_value) value = "true";  // a bare --flag
                else if (!next_is_value) throw ConfigError(ErrorInfo{"command line"}.at("--" + key).msg("needs a value"));
                else value = args[++i];
            }
        } else if (a.find('=') != std::string::npos) {
            key = a.substr(0, a.find('='));
            value = a.substr(a.find('=') + 1);
        } else {
            throw ConfigError(ErrorInfo{"command line"}.at("'" + a + "'").expected("--key value or key=value"));
        }
        set(canonical_key(key), value, "command line");
    }
}

// --kebab-case spellings of snake_case keys (--output-dir = --output_dir).
std::string ConfigSchema::canonical_key(const std::string& key) const {
    if (find(key)) return key;
    std::string snake = key;
    std::replace(snake.begin(), snake.end(), '-', '_');
    return find(snake) ? snake : key;
}

nlohmann::json ConfigSchema::to_json() const {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& e : entries_) {
        switch (e.kind) {
            case Kind::Bool: j[e.key] = *static_cast<bool*>(e.field); break;
            case Kind::Int: j[e.key] = *static_cast<int64_t*>(e.field); break;
            case Kind::Double: j[e.key] = *static_cast<double*>(e.field); break;
            case Kind::String: j[e.key] = *static_cast<std::string*>(e.field); break;
            case Kind::OptString: {
                auto* f = static_cast<std::optional<std::string>*>(e.field);
                j[e.key] = f->has_value() ? nlohmann::json(**f) : nlohmann::json(nullptr);
                break;
            }
            case Kind::OptInt: {
                auto* f = static_cast<std::optional<int64_t>*>(e.field);
                j[e.key] = f->has_value() ? nlohmann::json(**f) : nlohmann::json(nullptr);
                break;
            }
            case Kind::List: j[e.key] = *static_cast<std::vector<std::string>*>(e.field); break;
            case Kind::Ignored: break;
        }
    }
    return j;
}

std::string ConfigSchema::describe() const {
    std::string out;
    for (const auto& e : entries_) out += e.key + (e.kind == Kind::Ignored ? " (ignored)" : "") + ": " + e.help + "\n";
    return out;
}

}  // namespace pdsd
