#include "argv.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/log.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

namespace pdsd::cli {

namespace {

// Global options that take a value (the subcommand is the first word after them).
bool global_takes_value(const std::string& a) { return a == "--log-level" || a == "-t" || a == "--threads"; }

size_t subcommand_index(const std::vector<std::string>& args) {
    for (size_t i = 1; i < args.size(); ++i) {
        if (global_takes_value(args[i])) {
            ++i;
            continue;
        }
        if (args[i].empty() || args[i][0] != '-') return i;
    }
    return args.size();
}

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

std::string yaml_scalar(const YAML::Node& v) { return v.IsNull() ? std::string() : v.as<std::string>(); }

// LLaMA-Factory's inference YAML (examples/inference/*.yaml) as pdsd chat/serve flags.
std::vector<std::string> lf_infer_flags(const std::string& path, bool for_chat) {
    YAML::Node root;
    try {
        root = YAML::LoadFile(path);
    } catch (const YAML::BadFile&) {
        throw ConfigError(ErrorInfo{path}.msg("cannot read the inference YAML").hint("check the path"));
    } catch (const YAML::Exception& ex) {
        throw ConfigError(ErrorInfo{path}.at("line " + std::to_string(ex.mark.line + 1)).msg("invalid YAML: " + ex.msg));
    }
    if (!root.IsMap()) throw ConfigError(ErrorInfo{path}.expected("a mapping of key: value").found("a sequence or scalar"));
    static const std::vector<std::string> sampling = {"temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "do_sample"};
    static const std::vector<std::string> known = {"model_name_or_path", "adapter_name_or_path", "template", "finetuning_type",
                                                   "infer_backend", "infer_dtype", "trust_remote_code", "default_system",
                                                   "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "do_sample"};
    std::vector<std::string> flags;
    for (const auto& kv : root) {
        const std::string key = kv.first.as<std::string>();
        const std::string where = path + ":" + std::to_string(kv.first.Mark().line + 1);
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            ErrorInfo info{where};
            info.at("key '" + key + "'").msg("unknown inference key");
            const std::string s = did_you_mean(key, known);
            info.hint(s.empty() ? "known keys: model_name_or_path, adapter_name_or_path, template, finetuning_type, infer_dtype, "
                                  "temperature, top_p, top_k, max_new_tokens, repetition_penalty, do_sample, default_system"
                                : "did you mean '" + s + "'?");
            throw ConfigError(info);
        }
        if (!kv.second.IsScalar() && !kv.second.IsNull()) {
            throw ConfigError(ErrorInfo{where}.at("key '" + key + "'").expected("a single value").found("a list or mapping"));
        }
        const std::string v = yaml_scalar(kv.second);
        if (key == "model_name_or_path") {
            flags.insert(flags.end(), {"--model", resolve_model_dir(v, "model_name_or_path", {".", "data"})});
        } else if (key == "adapter_name_or_path") {
            if (v.find(',') != std::string::npos) {
                throw ConfigError(ErrorInfo{where}.at("adapter_name_or_path").expected("one adapter").found(v)
                                      .hint("merge the others first with pdsd export"));
            }
            if (!v.empty()) flags.insert(flags.end(), {"--adapter", v});
        } else if (key == "template") {
            if (!v.empty() && v != "qwen") {
                throw ConfigError(ErrorInfo{where}.at("template").expected("qwen").found(v).hint("pdsd serves Qwen2/Qwen2.5 models"));
            }
        } else if (key == "finetuning_type") {
            if (!v.empty() && v != "lora") throw ConfigError(ErrorInfo{where}.at("finetuning_type").expected("lora").found(v));
        } else if (key == "infer_dtype") {
            static const std::map<std::string, std::string> dt = {{"float16", "fp16"}, {"bfloat16", "bf16"}, {"float32", "fp32"}};
            if (dt.count(v)) flags.insert(flags.end(), {"--dtype", dt.at(v)});
            else if (v != "auto" && !v.empty()) throw ConfigError(ErrorInfo{where}.at("infer_dtype").expected("auto | float16 | bfloat16 | float32").found(v));
        } else if (key == "infer_backend" || key == "trust_remote_code") {
            log::info("cli", key + ": " + v + " is not used: pdsd runs its own engine and no model code");
        } else if (!for_chat) {
            log::info("cli", key + " is a per-request setting in pdsd serve (the request's own value, else generation_config.json)");
        } else if (key == "default_system") {
            flags.insert(flags.end(), {"--system", v});
        } else if (std::find(sampling.begin(), sampling.end(), key) != sampling.end()) {
            flags.insert(flags.end(), {"--" + key, v});
        }
    }
    return flags;
}

bool is_yaml(const std::string& a) {
    const auto ends = [&](const std::string& s) { return a.size() > s.size() && a.compare(a.size() - s.size(), s.size(), s) == 0; };
    return ends(".yaml") || ends(".yml");
}

void collect_long_names(const CLI::App& app, std::set<std::string>& names) {
    for (const CLI::Option* o : app.get_options()) {
        for (const auto& n : o->get_lnames()) names.insert(n);
    }
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) collect_long_names(*sub, names);
}

// --output-dir for a flag declared --output_dir (and the reverse), for the chosen command.
void normalize_flag_spelling(std::vector<std::string>& args, size_t from, const std::set<std::string>& names) {
    for (size_t i = from; i < args.size(); ++i) {
        std::string& a = args[i];
        if (a.rfind("--", 0) != 0 || a.size() < 4) continue;
        const size_t eq = a.find('=');
        std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        if (names.count(name)) continue;
        std::string other = name;
        const bool has_dash = other.find('-') != std::string::npos;
        std::replace(other.begin(), other.end(), has_dash ? '-' : '_', has_dash ? '_' : '-');
        if (names.count(other)) a = "--" + other + (eq == std::string::npos ? "" : a.substr(eq));
    }
}

}  // namespace

std::vector<std::string> rewrite_argv(const CLI::App& app, std::vector<std::string> args) {
    const size_t at = subcommand_index(args);
    if (at >= args.size()) return args;
    std::string& verb = args[at];
    if (verb == "version") {
        args[at] = "--version";
        return args;
    }
    const bool lf_server = verb == "api" || verb == "webchat" || verb == "webui";
    std::vector<std::string> inserted;
    if (lf_server) {
        const bool api = verb == "api";
        inserted = {"--host", env_or(api ? "API_HOST" : "GRADIO_SERVER_NAME", "127.0.0.1"), "--port",
                    env_or(api ? "API_PORT" : "GRADIO_SERVER_PORT", api ? "8000" : "7860")};
        verb = "serve";
    }
    if ((verb == "chat" || verb == "serve") && at + 1 < args.size() && is_yaml(args[at + 1])) {
        std::vector<std::string> f = lf_infer_flags(args[at + 1], verb == "chat");
        inserted.insert(inserted.end(), f.begin(), f.end());
        args.erase(args.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    args.insert(args.begin() + static_cast<std::ptrdiff_t>(at) + 1, inserted.begin(), inserted.end());

    const CLI::App* sub = nullptr;
    std::vector<std::string> verbs;
    for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; })) {
        verbs.push_back(s->get_name());
        if (s->check_name(args[at])) sub = s;
    }
    if (!sub) {
        const std::string guess = did_you_mean(args[at], verbs);
        std::string all;
        for (const auto& v : verbs) all += (all.empty() ? "" : ", ") + v;
        throw UsageError(ErrorInfo{}.at("command '" + args[at] + "'").msg("unknown command")
                             .hint(guess.empty() ? "commands: " + all : "did you mean 'pdsd " + guess + "'? (commands: " + all + ")"));
    }
    std::set<std::string> names;
    collect_long_names(app, names);  // global options too
    normalize_flag_spelling(args, at + 1, names);
    return args;
}

}  // namespace pdsd::cli
