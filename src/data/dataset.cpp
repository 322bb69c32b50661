// dataset_info.json registry, json/jsonl record streaming and LLaMA-Factory's converters
// (data/parser.py, data/converter.py of LLaMA-Factory 0.9.5, read for behaviour only).
#include "pdsd/data/dataset.h"

#include "pdsd/core/config.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>

#include <sys/mman.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace pdsd::data {

using ojson = nlohmann::ordered_json;

const char* role_name(Role role) {
    switch (role) {
        case Role::user: return "user";
        case Role::assistant: return "assistant";
        case Role::observation: return "observation";
        case Role::function: return "function";
    }
    return "?";
}

std::string Problem::format() const {
    std::string head = dataset.empty() ? "" : "dataset '" + dataset + "': ";
    return head + info.format();
}

size_t find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) { ++i; continue; }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return i;
        if (i + len > n) return i;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        // overlong forms, surrogates and values past U+10FFFF are invalid too
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return i;
        i += len;
    }
    return std::string_view::npos;
}

namespace {
void dump_string(const std::string& s, std::string& out) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

void dump_value(const ojson& v, std::string& out) {
    switch (v.type()) {
        case ojson::value_t::object: {
            out += '{';
            bool first = true;
            for (auto it = v.begin(); it != v.end(); ++it) {
                if (!first) out += ", ";
                first = false;
                dump_string(it.key(), out);
                out += ": ";
                dump_value(it.value(), out);
            }
            out += '}';
            break;
        }
        case ojson::value_t::array: {
            out += '[';
            for (size_t i = 0; i < v.size(); ++i) {
                if (i) out += ", ";
                dump_value(v[i], out);
            }
            out += ']';
            break;
        }
        case ojson::value_t::string: dump_string(v.get_ref<const std::string&>(), out); break;
        case ojson::value_t::null: out += "null"; break;
        case ojson::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
        default: out += v.dump(); break;  // numbers: nlohmann prints floats like Python's repr
    }
}

}  // namespace

std::string python_json_dumps(const ojson& value) {
    std::string out;
    dump_value(value, out);
    return out;
}

// ---------------------------------------------------------------- registry

namespace {

const std::vector<std::string> kEntryKeys = {
    "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "file_name", "file_sha1",
    "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags"};
const std::vector<std::string> kColumnKeys = {"prompt", "query", "response", "history", "messages", "system", "tools",
                                              "images", "videos", "audios", "chosen", "rejected", "kto_tag"};
const std::vector<std::string> kTagKeys = {"role_tag", "content_tag", "user_tag", "assistant_tag",
                                           "observation_tag", "function_tag", "system_tag"};

std::string type_name(const ojson& v) {
    switch (v.type()) {
        case ojson::value_t::null: return "null";
        case ojson::value_t::boolean: return "a boolean";
        case ojson::value_t::string: return "a string";
        case ojson::value_t::array: return "an array";
        case ojson::value_t::object: return "an object";
        case ojson::value_t::binary: return "binary";
        case ojson::value_t::discarded: return "nothing";
        default: return "a number";
    }
}

std::string qt(const std::string& s) { return "\"" + s + "\""; }

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
    return out;
}

void add_problem(Problems& problems, const std::string& dataset, ErrorInfo info) {
    problems.push_back(Problem{dataset, std::move(info)});
}

// Unknown key: problem with did-you-mean over `known`.
void unknown_key(Problems& problems, const std::string& dataset, const std::string& file, const std::string& where,
                 const std::string& key, const std::vector<std::string>& known) {
    std::string guess = did_you_mean(key, known);
    if (guess.empty() && key.size() >= 3)  // "format" -> "formatting": a prefix is a strong hint too
        for (const auto& k : known)
            if (k.rfind(key, 0) == 0 || key.rfind(k, 0) == 0) { guess = k; break; }
    std::string hint = guess.empty() ? "known keys: " + join(known, ", ")
                                     : "did you mean \"" + guess + "\"? (LLaMA-Factory silently ignores unknown keys" +
                                           (guess == "formatting" ? " and would read this dataset as alpaca)" : ")");
    add_problem(problems, dataset,
                ErrorInfo{file}.at(where).msg("unknown key " + qt(key)).expected("one of the keys LLaMA-Factory reads").found(qt(key)).hint(hint));
}

// Parse one entry; returns false when it has problems.
bool parse_entry(const std::string& name, const ojson& e, const std::string& file, DatasetAttr& a, Problems& problems) {
    size_t before = problems.size();
    std::string where = "entry " + qt(name);
    auto bad_type = [&](const std::string& key, const std::string& expected, const ojson& v) {
        add_problem(problems, name, ErrorInfo{file}.at(where + " key " + qt(key)).msg("wrong type")
                                        .expected(expected).found(type_name(v)));
    };
    if (!e.is_object()) {
        add_problem(problems, name, ErrorInfo{file}.at(where).msg("entry is not an object")
                                        .expected("an object with \"file_name\"").found(type_name(e)));
        return false;
    }
    a.name = name;
    for (auto it = e.begin(); it != e.end(); ++it) {
        const std::string& key = it.key();
        const ojson& v = it.value();
        if (std::find(kEntryKeys.begin(), kEntryKeys.end(), key) == kEntryKeys.end()) {
            unknown_key(problems, name, file, where, key, kEntryKeys);
            continue;
        }
        if (key == "hf_hub_url" || key == "ms_hub_url" || key == "om_hub_url" || key == "script_url" ||
            key == "cloud_file_name") {
            add_problem(problems, name,
                        ErrorInfo{file}.at(where + " key " + qt(key)).msg("remote dataset source: pdsd has no network access")
                            .expected("a local \"file_name\"").found(key + " = " + (v.is_string() ? v.get<std::string>() : v.dump()))
                            .hint("download the dataset yourself, put the json/jsonl file into the dataset dir and register it with \"file_name\""));
        } else if (key == "file_name" || key == "subset" || key == "split" || key == "folder" || key == "file_sha1") {
            if (!v.is_string()) { bad_type(key, "a string", v); continue; }
            if (key == "file_name") a.file_name = v.get<std::string>();
            else if (key == "subset") a.subset = v.get<std::string>();
            else if (key == "split") a.split = v.get<std::string>();
            else if (key == "folder") a.folder = v.get<std::string>();
        } else if (key == "formatting") {
            std::string f = v.is_string() ? v.get<std::string>() : "";
            if (f == "alpaca") a.formatting = Formatting::alpaca;
            else if (f == "sharegpt") a.formatting = Formatting::sharegpt;
            else if (f == "openai") a.formatting = Formatting::openai;
            else
                add_problem(problems, name, ErrorInfo{file}.at(where + " key \"formatting\"").msg("unknown formatting")
                                                .expected("\"alpaca\", \"sharegpt\" or \"openai\"").found(v.dump()));
        } else if (key == "ranking") {
            if (!v.is_boolean()) { bad_type(key, "true or false", v); continue; }
            a.ranking = v.get<bool>();
            if (a.ranking)
                add_problem(problems, name, ErrorInfo{file}.at(where + " key \"ranking\"").msg("ranking (preference) datasets are not supported")
                                                .expected("ranking: false (pdsd trains sft only)").found("true")
                                                .hint("use an SFT dataset, or remove \"ranking\""));
        } else if (key == "num_samples") {
            if (!v.is_number_integer() || v.get<int64_t>() < 0) { bad_type(key, "a non-negative integer", v); continue; }
            a.num_samples = v.get<int64_t>();
        } else if (key == "columns" || key == "tags") {
            if (!v.is_object()) { bad_type(key, "an object", v); continue; }
        }
    }
    // LF: when "columns" is given, every column it does not name becomes None (no default).
    if (e.contains("columns") && e["columns"].is_object()) {
        a.prompt.clear(); a.query.clear(); a.response.clear(); a.history.clear(); a.messages.clear();
        a.system.clear(); a.tools.clear();
        for (auto it = e["columns"].begin(); it != e["columns"].end(); ++it) {
            const std::string& key = it.key();
            if (std::find(kColumnKeys.begin(), kColumnKeys.end(), key) == kColumnKeys.end()) {
                unknown_key(problems, name, file, where + " columns", key, kColumnKeys);
                continue;
            }
            if (!it.value().is_string() && !it.value().is_null()) { bad_type("columns." + key, "a string (the column name)", it.value()); continue; }
            std::string col = it.value().is_string() ? it.value().get<std::string>() : "";
            if (key == "prompt") a.prompt = col;
            else if (key == "query") a.query = col;
            else if (key == "response") a.response = col;
            else if (key == "history") a.history = col;
            else if (key == "messages") a.messages = col;
            else if (key == "system") a.system = col;
            else if (key == "tools") a.tools = col;
            else if (!col.empty())
                add_problem(problems, name, ErrorInfo{file}.at(where + " columns key " + qt(key))
                                                .msg("multimodal / preference column is not supported").found(key + " = " + qt(col))
                                                .hint("pdsd trains text-only SFT: remove this column"));
        }
    }
    if (e.contains("tags") && e["tags"].is_object()) {
        a.role_tag.clear(); a.content_tag.clear(); a.user_tag.clear(); a.assistant_tag.clear();
        a.observation_tag.clear(); a.function_tag.clear(); a.system_tag.clear();
        for (auto it = e["tags"].begin(); it != e["tags"].end(); ++it) {
            const std::string& key = it.key();
            if (std::find(kTagKeys.begin(), kTagKeys.end(), key) == kTagKeys.end()) {
                unknown_key(problems, name, file, where + " tags", key, kTagKeys);
                continue;
            }
            if (!it.value().is_string() && !it.value().is_null()) { bad_type("tags." + key, "a string", it.value()); continue; }
            std::string t = it.value().is_string() ? it.value().get<std::string>() : "";
            if (key == "role_tag") a.role_tag = t;
            else if (key == "content_tag") a.content_tag = t;
            else if (key == "user_tag") a.user_tag = t;
            else if (key == "assistant_tag") a.assistant_tag = t;
            else if (key == "observation_tag") a.observation_tag = t;
            else if (key == "function_tag") a.function_tag = t;
            else if (key == "system_tag") a.system_tag = t;
        }
        if (a.formatting == Formatting::alpaca)
            add_problem(problems, name, ErrorInfo{file}.at(where + " key \"tags\"").msg("\"tags\" only apply to sharegpt/openai data")
                                            .expected("\"formatting\": \"sharegpt\"").found("formatting alpaca (the default)")
                                            .hint("add \"formatting\": \"sharegpt\" (a misspelt \"format\" key leaves the default alpaca)"));
    }
    bool has_remote = e.contains("hf_hub_url") || e.contains("ms_hub_url") || e.contains("om_hub_url") ||
                      e.contains("script_url") || e.contains("cloud_file_name");
    if (!has_remote && a.file_name.empty() && !(e.contains("file_name") && !e["file_name"].is_string()))
        add_problem(problems, name, ErrorInfo{file}.at(where).msg("no data source")
                                        .expected("\"file_name\": a json/jsonl file or folder in the dataset dir").found("no file_name"));
    if (a.formatting == Formatting::alpaca && (a.prompt.empty() && a.query.empty()) && e.contains("columns"))
        add_problem(problems, name, ErrorInfo{file}.at(where + " columns").msg("alpaca columns name no prompt")
                                        .expected("\"prompt\" (and optionally \"query\")").found(e["columns"].dump())
                                        .hint(e["columns"].contains("messages") ? "this looks like sharegpt data: add \"formatting\": \"sharegpt\"" : ""));
    if (a.formatting != Formatting::alpaca && a.messages.empty())
        add_problem(problems, name, ErrorInfo{file}.at(where + " columns").msg("sharegpt data needs a messages column")
                                        .expected("\"messages\": \"conversations\"").found(e.contains("columns") ? e["columns"].dump() : "none"));
    if (a.formatting == Formatting::openai && !e.contains("tags")) {
        // LF's openai format is read through the tags: without them LF uses sharegpt's from/value.
    }
    return problems.size() == before;
}

}  // namespace

Registry Registry::load(const std::string& dataset_dir, Problems& problems) {
    std::string path = (fs::path(dataset_dir) / "dataset_info.json").string();
    std::string text;
    try {
        text = read_file(path);
    } catch (const Error& e) {
        Registry r;
        r.dir_ = dataset_dir;
        r.source_ = path;
        add_problem(problems, "", ErrorInfo{path}.msg("cannot read the dataset registry").expected("dataset_info.json in --dataset_dir")
                                      .found(fs::exists(dataset_dir) ? "no readable dataset_info.json" : "folder does not exist")
                                      .hint("pass --dataset_dir pointing at the folder that holds dataset_info.json"));
        return r;
    }
    return parse(text, path, dataset_dir, problems);
}

Registry Registry::parse(const std::string& text, const std::string& source, const std::string& dataset_dir,
                         Problems& problems) {
    Registry r;
    r.dir_ = dataset_dir;
    r.source_ = source;
    ojson root;
    try {
        root = parse_ordered_json_bounded(text, source);  // syntax, depth and size, with line and column
    } catch (const FormatError& err) {
        add_problem(problems, "", err.info());
        return r;
    }
    if (!root.is_object()) {
        add_problem(problems, "", ErrorInfo{source}.msg("registry is not a JSON object").expected("{\"name\": {\"file_name\": ...}, ...}")
                                      .found(type_name(root)));
        return r;
    }
    for (auto it = root.begin(); it != root.end(); ++it) {
        r.all_names_.push_back(it.key());
        DatasetAttr a;
        Problems entry_problems;
        if (parse_entry(it.key(), it.value(), source, a, entry_problems)) r.entries_[it.key()] = a;
        else r.entry_problems_[it.key()] = std::move(entry_problems);
    }
    return r;
}

const DatasetAttr* Registry::find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
}

bool Registry::check_defined(const std::string& name, Problems& problems) const {
    if (std::find(all_names_.begin(), all_names_.end(), name) != all_names_.end()) {
        auto it = entry_problems_.find(name);
        if (it != entry_problems_.end()) problems.insert(problems.end(), it->second.begin(), it->second.end());
        return true;
    }
    std::string guess = did_you_mean(name, all_names_);
    add_problem(problems, name,
                ErrorInfo{source_}.msg("undefined dataset " + qt(name))
                    .expected("a name defined in dataset_info.json").found(qt(name))
                    .hint(guess.empty() ? "defined: " + join(all_names_, ", ") : "did you mean \"" + guess + "\"?"));
    return false;
}

// ---------------------------------------------------------------- converters

namespace {

struct Ctx {
    const DatasetAttr& attr;
    const RecordRef& ref;
    Problems& problems;
    bool ok = true;
    void problem(const std::string& field, const std::string& what, const std::string& expected,
                 const std::string& found, const std::string& hint = "") {
        ok = false;
        std::string where = "record " + std::to_string(ref.index);
        if (ref.line > 0) where += " (line " + std::to_string(ref.line) + ")";
        if (!field.empty()) where += " field " + qt(field);
        add_problem(problems, ref.dataset, ErrorInfo{ref.file}.at(where).msg(what).expected(expected).found(found).hint(hint));
    }
};

std::string short_value(const ojson& v) {
    std::string s = v.dump(-1, ' ', false, ojson::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return type_name(v) + " " + s;
}

// A string column that may be missing or null ("" then).
bool get_opt_string(Ctx& c, const ojson& rec, const std::string& col, std::string& out) {
    out.clear();
    if (col.empty() || !rec.contains(col) || rec[col].is_null()) return true;
    if (!rec[col].is_string()) {
        c.problem(col, "wrong type", "a string", short_value(rec[col]));
        return false;
    }
    out = rec[col].get<std::string>();
    return true;
}

const std::regex& placeholder_re() {
    static const std::regex re(R"(\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\})");
    return re;
}

void check_placeholders(Ctx& c, const Conversation& conv) {
    auto check = [&](const std::string& text, const std::string& field) {
        if (text.find("{{") == std::string::npos) return;
        std::smatch m;
        if (std::regex_search(text, m, placeholder_re()))
            c.problem(field, "leftover placeholder " + m.str(0), "filled-in text", m.str(0),
                      "replace it with the real value (LLaMA-Factory's identity.json ships {{name}} and {{author}} to be filled in)");
    };
    check(conv.system, "system");
    for (size_t i = 0; i < conv.messages.size(); ++i)
        check(conv.messages[i].content, "message " + std::to_string(i) + " (" + role_name(conv.messages[i].role) + ")");
}

std::string tools_text(Ctx& c, const ojson& rec, const std::string& col) {
    if (col.empty() || !rec.contains(col) || rec[col].is_null()) return "";
    const ojson& v = rec[col];
    if (v.is_string()) {
        std::string s = v.get<std::string>();
        if (!s.empty()) {
            try {
                ojson t = parse_ordered_json_bounded(s, "tools");   // the template walks it: depth-bounded
                if (!t.is_array() && !t.is_object()) c.problem(col, "tools is not a JSON list", "a JSON list of tool schemas", short_value(t));
            } catch (const FormatError& e) {
                c.problem(col, "tools is not valid JSON", "a JSON list of tool schemas (as a string)",
                          short_value(v) + " (" + e.info().what + ")");
            }
        }
        return s;
    }
    if (v.is_array() || v.is_object()) return v.dump();
    c.problem(col, "wrong type", "a JSON string or list of tool schemas", short_value(v));
    return "";
}

std::optional<Conversation> convert_alpaca(Ctx& c, const ojson& rec) {
    const DatasetAttr& a = c.attr;
    Conversation conv;
    if (!a.history.empty() && rec.contains(a.history) && !rec[a.history].is_null()) {
        const ojson& h = rec[a.history];
        if (!h.is_array()) {
            c.problem(a.history, "wrong type", "a list of [prompt, response] pairs", short_value(h));
        } else {
            for (size_t i = 0; i < h.size(); ++i) {
                const ojson& pair = h[i];
                if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string()) {
                    c.problem(a.history + "[" + std::to_string(i) + "]", "wrong type", "a [prompt, response] pair of strings",
                              short_value(pair));
                    continue;
                }
                conv.messages.push_back({Role::user, pair[0].get<std::string>()});
                conv.messages.push_back({Role::assistant, pair[1].get<std::string>()});
                if (pair[1].get<std::string>().empty())
                    c.problem(a.history + "[" + std::to_string(i) + "]", "empty response in history", "a non-empty response", "\"\"");
            }
        }
    }
    std::string instruction, input;
    if (!a.prompt.empty() && !rec.contains(a.prompt))
        c.problem(a.prompt, "missing required column", "column " + qt(a.prompt) + " (alpaca prompt)", "no such key",
                  rec.contains(a.messages.empty() ? "conversations" : a.messages)
                      ? "this record looks like sharegpt: set \"formatting\": \"sharegpt\" in dataset_info.json"
                      : "");
    get_opt_string(c, rec, a.prompt, instruction);
    get_opt_string(c, rec, a.query, input);
    std::vector<std::string> parts;
    if (!instruction.empty()) parts.push_back(instruction);
    if (!input.empty()) parts.push_back(input);
    std::string user = join(parts, "\n");
    if (user.empty() && c.ok) c.problem(a.prompt, "empty prompt", "a non-empty instruction or input", "\"\"");
    conv.messages.push_back({Role::user, user});
    if (a.response.empty() || !rec.contains(a.response)) {
        c.problem(a.response, "missing required column", "column " + qt(a.response.empty() ? "output" : a.response) + " (alpaca response)", "no such key");
    } else if (!rec[a.response].is_string()) {
        c.problem(a.response, "wrong type", "a string", short_value(rec[a.response]));
    } else {
        std::string out = rec[a.response].get<std::string>();
        if (out.empty()) c.problem(a.response, "empty response", "a non-empty response", "\"\"", "LLaMA-Factory would train on just <|im_end|>");
        conv.messages.push_back({Role::assistant, out});
    }
    get_opt_string(c, rec, a.system, conv.system);
    conv.tools = tools_text(c, rec, a.tools);
    return conv;
}

std::optional<Conversation> convert_sharegpt(Ctx& c, const ojson& rec) {
    const DatasetAttr& a = c.attr;
    Conversation conv;
    if (!rec.contains(a.messages)) {
        c.problem(a.messages, "missing required column", "column " + qt(a.messages) + " (sharegpt messages)", "no such key",
                  rec.contains("instruction") ? "this record looks like alpaca: remove \"formatting\": \"sharegpt\" or fix the columns" : "");
        return std::nullopt;
    }
    const ojson& msgs = rec[a.messages];
    if (!msgs.is_array()) {
        c.problem(a.messages, "wrong type", "a list of messages", short_value(msgs));
        return std::nullopt;
    }
    const bool openai = a.formatting == Formatting::openai;
    // Validate message objects first.
    std::vector<std::pair<std::string, std::string>> raw;  // (role tag, content)
    for (size_t i = 0; i < msgs.size(); ++i) {
        const ojson& m = msgs[i];
        std::string field = a.messages + "[" + std::to_string(i) + "]";
        if (!m.is_object()) { c.problem(field, "wrong type", "a message object", short_value(m)); return std::nullopt; }
        if (!m.contains(a.role_tag) || !m[a.role_tag].is_string()) {
            c.problem(field, m.contains(a.role_tag) ? "wrong type" : "missing role tag", "string key " + qt(a.role_tag),
                      m.contains(a.role_tag) ? short_value(m[a.role_tag]) : "keys " + short_value(m),
                      m.contains("role") && a.role_tag != "role" ? "set \"tags\": {\"role_tag\": \"role\", \"content_tag\": \"content\", ...} in dataset_info.json" : "");
            return std::nullopt;
        }
        std::string content;
        bool has_tool_calls = openai && m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
        if (!has_tool_calls) {
            if (!m.contains(a.content_tag) || !m[a.content_tag].is_string()) {
                c.problem(field, m.contains(a.content_tag) ? "wrong type" : "missing content tag", "string key " + qt(a.content_tag),
                          m.contains(a.content_tag) ? short_value(m[a.content_tag]) : "keys " + short_value(m));
                return std::nullopt;
            }
            content = m[a.content_tag].get<std::string>();
        }
        std::string role = m[a.role_tag].get<std::string>();
        if (has_tool_calls && (role == a.assistant_tag || role == a.function_tag)) {
            ojson calls = ojson::array();
            for (const auto& tc : m["tool_calls"]) calls.push_back(tc.contains("function") ? tc["function"] : tc);
            content = python_json_dumps(calls);  // LF: json.dumps(tool_calls_list, ensure_ascii=False)
            role = a.function_tag;
        }
        raw.emplace_back(role, content);
    }
    size_t start = 0;
    if (!a.system_tag.empty() && !raw.empty() && raw[0].first == a.system_tag) {
        conv.system = raw[0].second;
        start = 1;
    } else {
        get_opt_string(c, rec, a.system, conv.system);
    }
    if (openai) {  // consecutive tool results merge into one observation turn (LF OpenAIDatasetConverter)
        std::vector<std::pair<std::string, std::string>> merged(raw.begin(), raw.begin() + start);
        std::vector<std::string> pending;
        for (size_t i = start; i < raw.size(); ++i) {
            if (raw[i].first == a.observation_tag) { pending.push_back(raw[i].second); continue; }
            if (!pending.empty()) { merged.emplace_back(a.observation_tag, join(pending, "\n</tool_response>\n<tool_response>\n")); pending.clear(); }
            merged.push_back(raw[i]);
        }
        if (!pending.empty()) merged.emplace_back(a.observation_tag, join(pending, "\n</tool_response>\n<tool_response>\n"));
        raw.swap(merged);
    }
    for (size_t i = start; i < raw.size(); ++i) {
        size_t turn = i - start;
        const std::string& role = raw[i].first;
        std::optional<Role> r;
        if (turn % 2 == 0) {
            if (!a.user_tag.empty() && role == a.user_tag) r = Role::user;
            else if (!a.observation_tag.empty() && role == a.observation_tag) r = Role::observation;
        } else {
            if (!a.assistant_tag.empty() && role == a.assistant_tag) r = Role::assistant;
            else if (!a.function_tag.empty() && role == a.function_tag) r = Role::function;
        }
        if (!r) {
            std::string expected = turn % 2 == 0 ? qt(a.user_tag) + " or " + qt(a.observation_tag)
                                                 : qt(a.assistant_tag) + " or " + qt(a.function_tag);
            c.problem(a.messages + "[" + std::to_string(i) + "]." + a.role_tag, "bad role order",
                      expected + " at turn " + std::to_string(turn) + " (roles alternate: user/observation, then assistant/function_call)",
                      qt(role), "LLaMA-Factory skips this example (\"Invalid role tag\")");
            return std::nullopt;
        }
        conv.messages.push_back({*r, raw[i].second});
    }
    if (conv.messages.size() % 2 != 0 || conv.messages.empty()) {
        c.problem(a.messages, conv.messages.empty() ? "no messages" : "odd message count",
                  "an even number of messages (after the optional system), ending with an assistant turn",
                  std::to_string(conv.messages.size()) + " messages", "LLaMA-Factory skips this example (\"Invalid message count\")");
        return std::nullopt;
    }
    for (size_t i = 0; i < conv.messages.size(); ++i) {
        const Message& m = conv.messages[i];
        if ((m.role == Role::assistant || m.role == Role::function) && m.content.empty())
            c.problem(a.messages + "[" + std::to_string(i + start) + "]", "empty response", "a non-empty assistant message", "\"\"");
        if (m.role == Role::function) {
            try {
                ojson f = parse_ordered_json_bounded(m.content, "function call");
                auto ok_call = [](const ojson& x) { return x.is_object() && x.contains("name") && x.contains("arguments"); };
                bool good = f.is_array() ? std::all_of(f.begin(), f.end(), ok_call) : ok_call(f);
                if (!good)
                    c.problem(a.messages + "[" + std::to_string(i + start) + "]", "bad function call", "JSON {\"name\": ..., \"arguments\": {...}}",
                              short_value(f));
            } catch (const FormatError&) {
                // "<think>...</think>" or "<tool_call>...</tool_call>" wrapped calls are unwrapped by the template
                if (m.content.find("<tool_call>") == std::string::npos && m.content.find("<think>") == std::string::npos)
                    c.problem(a.messages + "[" + std::to_string(i + start) + "]", "function call is not valid JSON",
                              "JSON {\"name\": ..., \"arguments\": {...}}", short_value(ojson(m.content)));
            }
        }
    }
    conv.tools = tools_text(c, rec, a.tools);
    return conv;
}

}  // namespace

std::optional<Conversation> convert_record(const DatasetAttr& attr, const ojson& record, const RecordRef& ref,
                                           Problems& problems) {
    Ctx c{attr, ref, problems};
    if (!record.is_object()) {
        c.problem("", "record is not an object", "a JSON object", short_value(record));
        return std::nullopt;
    }
    std::optional<Conversation> conv =
        attr.formatting == Formatting::alpaca ? convert_alpaca(c, record) : convert_sharegpt(c, record);
    if (conv) check_placeholders(c, *conv);
    if (!c.ok) return std::nullopt;
    return conv;
}

// ---------------------------------------------------------------- files

namespace {

// Calls fn(offset, text) for each element of a top-level JSON array in `s`; throws FormatError
// (via parse_json) pointing at the offending position when the array structure is broken.
template <typename Fn>
void split_json_array(std::string_view s, const std::string& path, Fn&& fn) {
    size_t i = 0, n = s.size();
    if (n >= 3 && static_cast<unsigned char>(s[0]) == 0xEF && static_cast<unsigned char>(s[1]) == 0xBB &&
        static_cast<unsigned char>(s[2]) == 0xBF)
        i = 3;
    auto skip_ws = [&] {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
    };
    auto fail = [&](size_t at, const std::string& what, const std::string& expected) {
        TextPos p = text_pos(s, at);
        throw FormatError(ErrorInfo{path}.at("line " + std::to_string(p.line) + ", column " + std::to_string(p.column))
                              .msg("invalid JSON: " + what).expected(expected)
                              .hint("a .json dataset must be one array of records; use .jsonl for one record per line"));
    };
    skip_ws();
    if (i >= n || s[i] != '[') fail(i, i >= n ? "empty file" : "the file does not start with '['", "a JSON array");
    ++i;
    skip_ws();
    if (i < n && s[i] == ']') return;
    while (true) {
        skip_ws();
        size_t start = i;
        int depth = 0;
        bool in_str = false;
        for (; i < n; ++i) {
            char ch = s[i];
            if (in_str) {
                if (ch == '\\') ++i;
                else if (ch == '"') in_str = false;
                continue;
            }
            if (ch == '"') in_str = true;
            else if (ch == '{' || ch == '[') ++depth;
            else if (ch == '}' || ch == ']') {
                if (depth == 0) break;
                --depth;
            } else if (ch == ',' && depth == 0) break;
        }
        if (i >= n) fail(n, "unexpected end of file inside the array", "']' closing the top-level array");
        size_t end = i;
        while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\n' || s[end - 1] == '\r' || s[end - 1] == '\t')) --end;
        if (end == start) fail(start, "empty array element", "a record");
        fn(start, s.substr(start, end - start));
        if (s[i] == ']') {
            ++i;
            skip_ws();
            if (i < n) fail(i, "text after the closing ']'", "end of file");
            return;
        }
        ++i;  // ','
    }
}

bool ends_with(const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::vector<std::string> data_files(const Registry& reg, const DatasetAttr& attr, Problems& problems) {
    fs::path p = fs::path(reg.dataset_dir()) / attr.file_name;
    std::vector<std::string> files;
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
        for (const auto& e : fs::directory_iterator(p, ec))
            if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path().string());
        std::sort(files.begin(), files.end());
        if (files.empty())
            add_problem(problems, attr.name, ErrorInfo{p.string()}.msg("dataset folder is empty").expected("json/jsonl files"));
    } else if (fs::exists(p, ec)) {
        files.push_back(p.string());
    } else {
        add_problem(problems, attr.name, ErrorInfo{p.string()}.msg("missing file").expected("the file named by \"file_name\"")
                                             .found("no such file").hint("file_name is relative to --dataset_dir (" + reg.dataset_dir() + ")"));
    }
    std::vector<std::string> out;
    for (const auto& f : files) {
        if (ends_with(f, ".json") || ends_with(f, ".jsonl")) out.push_back(f);
        else
            add_problem(problems, attr.name, ErrorInfo{f}.msg("unsupported file type").expected(".json (an array) or .jsonl (one record per line)")
                                                 .found(fs::path(f).extension().string().empty() ? "no extension" : fs::path(f).extension().string())
                                                 .hint("pdsd reads json/jsonl; convert csv/parquet/arrow with a script first"));
    }
    return out;
}

// Line/column of byte `rel` of a record that starts at byte `offset` of `whole`, on line
// `start_line`: only the record and the start of its first line are scanned (never the
// whole file, which may be gigabytes with many errors).
TextPos record_pos(std::string_view whole, size_t offset, int64_t start_line, std::string_view text, size_t rel) {
    TextPos in = text_pos(text, rel);
    TextPos p;
    p.line = static_cast<size_t>(start_line) + in.line - 1;
    if (in.line > 1) {
        p.column = in.column;
    } else {
        size_t b = offset;
        while (b > 0 && whole[b - 1] != '\n') --b;
        p.column = offset - b + in.column;
    }
    return p;
}

// Parse one record's text; problems for non-UTF-8 and syntax errors (with line/column).
std::optional<ojson> parse_record(std::string_view whole, size_t offset, std::string_view text, const RecordRef& ref,
                                  Problems& problems) {
    size_t bad = find_invalid_utf8(text);
    if (bad != std::string_view::npos) {
        TextPos p = record_pos(whole, offset, ref.line, text, bad);
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
        add_problem(problems, ref.dataset, ErrorInfo{ref.file}.at("record " + std::to_string(ref.index) + " (line " + std::to_string(p.line) +
                                                                  ", column " + std::to_string(p.column) + ")")
                                               .msg("non-UTF-8 bytes").expected("UTF-8 text").found(std::string("byte ") + hex)
                                               .hint("re-encode the file as UTF-8 (e.g. iconv -f GBK -t UTF-8)"));
        return std::nullopt;
    }
    // Depth first: converters, short_value's dump and the chat template recurse into
    // the value (a record of 75,000 nested arrays overflowed the stack).
    if (auto v = find_json_limit_violation(text)) {
        TextPos p = record_pos(whole, offset, ref.line, text, v->offset);
        add_problem(problems, ref.dataset, ErrorInfo{ref.file}.at("record " + std::to_string(ref.index) + " (line " + std::to_string(p.line) +
                                                                  ", column " + std::to_string(p.column) + ")")
                                               .msg("JSON " + v->what)
                                               .hint("a dataset record nests a few levels; this file was not written by a dataset tool"));
        return std::nullopt;
    }
    try {
        return ojson::parse(text.begin(), text.end());
    } catch (const ojson::parse_error& e) {
        TextPos p = record_pos(whole, offset, ref.line, text, std::min<size_t>(text.size(), e.byte > 0 ? e.byte - 1 : 0));
        std::string what = e.what();
        auto colon = what.find(": ", what.find("parse error"));
        if (colon != std::string::npos) what = what.substr(colon + 2);
        add_problem(problems, ref.dataset, ErrorInfo{ref.file}.at("record " + std::to_string(ref.index) + " (line " + std::to_string(p.line) +
                                                                  ", column " + std::to_string(p.column) + ")")
                                               .msg("invalid JSON: " + what)
                                               .hint("fix the syntax at that position (a missing comma or quote is the usual cause)"));
        return std::nullopt;
    } catch (const ojson::exception& e) {  // not syntax: a number out of range ("1e999")
        add_problem(problems, ref.dataset, ErrorInfo{ref.file}.at("record " + std::to_string(ref.index) + " (line " +
                                                                  std::to_string(ref.line) + ")")
                                               .msg(std::string("invalid JSON: ") + e.what())
                                               .hint("a number is out of range for a 64-bit integer or double"));
        return std::nullopt;
    }
}

// One line of `in` into `line` (without the '\n'); false at the end. A line longer than
// `max` bytes is skipped to its end with too_long set: a multi-GB line (no newline in a
// huge file) must not be read into memory. Lines may hold NUL bytes.
bool getline_bounded(std::istream& in, std::string& line, size_t max, bool& too_long) {
    line.clear();
    too_long = false;
    char buf[1 << 16];
    bool any = false;
    while (true) {
        in.getline(buf, sizeof buf);
        size_t n = static_cast<size_t>(in.gcount());
        if (!in.fail()) {   // ended by '\n' (counted in gcount) or by the end of the file
            line.append(buf, in.eof() ? n : n - 1);
            return true;
        }
        if (in.eof()) {   // nothing more
            in.clear(std::ios::eofbit);
            if (n) line.append(buf, n);
            return any || n;
        }
        // The buffer filled before a '\n': keep reading this line.
        any = true;
        line.append(buf, n);
        in.clear();
        if (line.size() > max) {
            too_long = true;
            line.clear();
            in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
            return true;
        }
    }
}

// Stream records of one file into `fn(ref, record)`.
template <typename Fn>
int64_t read_records(const std::string& file, const std::string& dataset, Problems& problems, Fn&& fn) {
    int64_t count = 0;
    if (ends_with(file, ".jsonl")) {
        std::ifstream in(file, std::ios::binary);
        if (!in) {
            add_problem(problems, dataset, ErrorInfo{file}.msg("cannot open file").found(std::strerror(errno)));
            return 0;
        }
        std::string line;
        int64_t lineno = 0;
        bool too_long = false;
        const size_t max_line = JsonLimits{}.max_bytes;
        while (getline_bounded(in, line, max_line, too_long)) {
            ++lineno;
            if (too_long) {
                add_problem(problems, dataset, ErrorInfo{file}.at("line " + std::to_string(lineno)).msg("line too long")
                                               .expected("a record of at most " + std::to_string(max_line >> 20) + " MiB")
                                               .found("more").hint("is the file really JSON Lines (one record per line)?"));
                ++count;
                continue;
            }
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.find_first_not_of(" \t") == std::string::npos) continue;
            RecordRef ref{dataset, file, count, lineno};
            ++count;
            // A per-line view: positions are computed inside the line, then shifted.
            auto rec = parse_record(line, 0, line, ref, problems);
            if (rec) fn(ref, *rec);
        }
        return count;
    }
    MappedFile map;
    try {
        map = MappedFile(file);
    } catch (const Error& e) {
        add_problem(problems, dataset, e.info().file.empty() ? ErrorInfo{file}.msg(e.what()) : e.info());
        return 0;
    }
    std::string_view whole(reinterpret_cast<const char*>(map.data()), map.size());
    size_t line = 1, line_at = 0;  // incremental line counting for record start lines
    // Pages already scanned are dropped from this process every 64 MiB (they stay in the page
    // cache), so resident memory stays flat on a multi-GB array.
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t released = 0;
    if (map.size() > 0) madvise(const_cast<uint8_t*>(map.data()), map.size(), MADV_SEQUENTIAL);
    try {
        split_json_array(whole, file, [&](size_t offset, std::string_view text) {
            for (; line_at < offset; ++line_at)
                if (whole[line_at] == '\n') ++line;
            RecordRef ref{dataset, file, count, static_cast<int64_t>(line)};
            ++count;
            auto rec = parse_record(whole, offset, text, ref, problems);
            if (rec) fn(ref, *rec);
            size_t done = offset / page * page;
            if (done - released >= (size_t{64} << 20)) {
                madvise(const_cast<uint8_t*>(map.data()) + released, done - released, MADV_DONTNEED);
                released = done;
            }
        });
    } catch (const FormatError& e) {
        add_problem(problems, dataset, e.info());
    }
    return count;
}

}  // namespace

int64_t for_each_conversation(const Registry& registry, const DatasetAttr& attr, Problems& problems,
                              const ConversationFn& fn) {
    int64_t total = 0;
    std::vector<std::string> files = data_files(registry, attr, problems);
    if (!attr.num_samples) {
        for (const auto& f : files)
            total += read_records(f, attr.name, problems, [&](const RecordRef& ref, const ojson& rec) {
                if (auto conv = convert_record(attr, rec, ref, problems)) fn(ref, *conv);
            });
        return total;
    }
    // num_samples: first N usable records, cycling when N exceeds the dataset.
    std::vector<std::pair<RecordRef, Conversation>> kept;
    int64_t want = *attr.num_samples;
    for (const auto& f : files)
        total += read_records(f, attr.name, problems, [&](const RecordRef& ref, const ojson& rec) {
            if (static_cast<int64_t>(kept.size()) >= want) return;
            if (auto conv = convert_record(attr, rec, ref, problems)) kept.emplace_back(ref, std::move(*conv));
        });
    for (int64_t i = 0; i < want && !kept.empty(); ++i) {
        const auto& k = kept[static_cast<size_t>(i) % kept.size()];
        fn(k.first, k.second);
    }
    return total;
}

int64_t for_each_dataset_conversation(const Registry& registry, const std::vector<std::string>& names, Problems& problems,
                              const ConversationFn& fn) {
    int64_t total = 0;
    for (const auto& n : names) {
        if (!registry.check_defined(n, problems)) continue;
        const DatasetAttr* attr = registry.find(n);
        if (!attr) continue;  // entry problems already reported
        total += for_each_conversation(registry, *attr, problems, fn);
    }
    return total;
}

std::vector<Conversation> load_conversations(const std::string& dataset_dir, const std::vector<std::string>& names,
                                             std::optional<int64_t> max_samples) {
    Problems problems;
    Registry reg = Registry::load(dataset_dir, problems);
    std::vector<Conversation> out;
    for (const auto& n : names) {
        int64_t taken = 0;
        for_each_dataset_conversation(reg, {n}, problems, [&](const RecordRef&, const Conversation& c) {
            if (max_samples && taken >= *max_samples) return;
            out.push_back(c);
            ++taken;
        });
    }
    if (!problems.empty()) {
        std::string all;
        size_t shown = std::min<size_t>(problems.size(), 20);
        for (size_t i = 0; i < shown; ++i) all += "\n  " + problems[i].format();
        if (problems.size() > shown) all += "\n  ... and " + std::to_string(problems.size() - shown) + " more";
        throw DataError(ErrorInfo{dataset_dir}.msg(std::to_string(problems.size()) + " dataset problem(s):" + all)
                            .hint("run `pdsd data validate --dataset " + join(names, ",") + " --dataset_dir " + dataset_dir + "` for the full report"));
    }
    return out;
}

}  // namespace pdsd::data
