// Qwen2.5 inference template and LLaMA-Factory's `qwen` training template (see the header).
#include "pdsd/tokenizer/chat_template.h"

#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace pdsd::tokenizer {

using ojson = nlohmann::ordered_json;

std::string render_qwen_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const std::string& default_system) {
    std::string out;
    size_t start = 0;
    if (!messages.empty() && messages[0].role == "system") {
        out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
        start = 1;
    } else {
        out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
    }
    for (size_t i = start; i < messages.size(); ++i)
        out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
}

std::pair<int64_t, int64_t> infer_seqlen(int64_t source_len, int64_t target_len, int64_t cutoff_len) {
    int64_t max_target_len;
    if (target_len * 2 < cutoff_len) {
        max_target_len = cutoff_len;
    } else if (source_len * 2 < cutoff_len) {
        max_target_len = cutoff_len - source_len;
    } else {
        // Python: int(cutoff_len * (target_len / (source_len + target_len))), float64 then truncation
        double frac = static_cast<double>(target_len) / static_cast<double>(source_len + target_len);
        max_target_len = static_cast<int64_t>(static_cast<double>(cutoff_len) * frac);
    }
    int64_t new_target_len = std::min(max_target_len, target_len);
    int64_t max_source_len = std::max<int64_t>(cutoff_len - new_target_len, 0);
    int64_t new_source_len = std::min(max_source_len, source_len);
    return {new_source_len, new_target_len};
}

namespace {

const char* kQwenToolPrompt1 =
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const char* kQwenToolPrompt2 =
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
    "\"arguments\": <args-json-object>}\n</tool_call>";

// LF ToolFormatter(tool_format="qwen").
std::string format_tools(const std::string& tools) {
    ojson t;
    try {
        t = parse_ordered_json_bounded(tools, "tools");   // depth-bounded: python_json_dumps recurses
    } catch (const FormatError& e) {
        throw DataError(ErrorInfo{}.at("tools").msg("invalid JSON in tool description (" + e.info().what + ")")
                            .found(tools.substr(0, 80)));
    }
    if (t.empty()) return "";
    if (!t.is_array()) throw DataError(ErrorInfo{}.at("tools").msg("tools is not a list").expected("a JSON list").found(tools.substr(0, 80)));
    std::string text;
    for (const auto& tool : t) {
        text += "\n";
        if (tool.is_object() && tool.contains("type") && tool["type"] == "function") {
            text += python_json_dumps(tool);
        } else {
            ojson wrapped = ojson::object();
            wrapped["type"] = "function";
            wrapped["function"] = tool;
            text += python_json_dumps(wrapped);
        }
    }
    return std::string(kQwenToolPrompt1) + text + kQwenToolPrompt2;
}

// LF FunctionFormatter(tool_format="qwen") content (without the "<|im_end|>\n" slot suffix).
std::string format_function(const std::string& content) {
    auto parse_functions = [&](const std::string& json_text) {
        ojson calls;
        try {
            calls = parse_ordered_json_bounded(json_text, "function message");
        } catch (const FormatError& e) {
            throw DataError(ErrorInfo{}.at("function message").msg("invalid JSON in function call (" + e.info().what + ")")
                                .found(content.substr(0, 80)));
        }
        if (!calls.is_array()) calls = ojson::array({calls});
        std::vector<std::string> texts;
        for (const auto& tc : calls) {
            if (!tc.is_object() || !tc.contains("name") || !tc.contains("arguments"))
                throw DataError(ErrorInfo{}.at("function message").msg("function call lacks name/arguments").found(content.substr(0, 80)));
            ojson obj = ojson::object();
            obj["name"] = tc["name"];
            obj["arguments"] = tc["arguments"];
            texts.push_back("<tool_call>\n" + python_json_dumps(obj) + "\n</tool_call>");
        }
        std::string out;
        for (size_t i = 0; i < texts.size(); ++i) out += (i ? "\n" : "") + texts[i];
        return out;
    };
    auto replace_all = [](std::string s, const std::string& what) {
        if (what.empty()) return s;
        for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos)) s.erase(pos, what.size());
        return s;
    };
    const std::string tc_open = "<tool_call>", tc_close = "</tool_call>";
    size_t a = content.find(tc_open);
    size_t b = a == std::string::npos ? std::string::npos : content.find(tc_close, a + tc_open.size());
    if (b != std::string::npos) {
        std::string whole = content.substr(a, b + tc_close.size() - a);
        std::string inner = content.substr(a + tc_open.size(), b - a - tc_open.size());
        return replace_all(content, whole) + parse_functions(inner);
    }
    const std::string th_open = "<think>\n", th_close = "\n</think>\n\n";
    size_t c = content.find(th_open);
    size_t d = c == std::string::npos ? std::string::npos : content.find(th_close, c + th_open.size());
    if (d != std::string::npos) {
        std::string thought = content.substr(c, d + th_close.size() - c);
        return thought + parse_functions(replace_all(content, thought));
    }
    return parse_functions(content);
}

}  // namespace

QwenTrainTemplate::QwenTrainTemplate(EncodeFn encode, TemplateOptions options)
    : encode_(std::move(encode)), opts_(std::move(options)) {
    if (!encode_) throw InternalError(ErrorInfo{}.msg("QwenTrainTemplate needs an encode function"));
    if (opts_.cutoff_len <= 0)
        throw ConfigError(ErrorInfo{}.at("cutoff_len").msg("cutoff_len must be positive").found(std::to_string(opts_.cutoff_len)));
    default_system_ = opts_.default_system ? *opts_.default_system : kQwenDefaultSystem;
    im_end_ids_ = encode_("<|im_end|>");
}

std::vector<int32_t> QwenTrainTemplate::encode_cached(const std::string& text) const {
    {
        std::lock_guard<std::mutex> lock(cache_mu_);
        auto it = cache_.find(text);
        if (it != cache_.end()) return it->second;
    }
    std::vector<int32_t> ids = encode_(text);
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < 64) cache_.emplace(text, ids);
    return ids;
}

std::vector<std::vector<std::string>> QwenTrainTemplate::slots(const data::Conversation& conv) const {
    std::string system = conv.system.empty() ? default_system_ : conv.system;
    std::vector<std::vector<std::string>> out;
    for (size_t i = 0; i < conv.messages.size(); ++i) {
        const data::Message& m = conv.messages[i];
        std::vector<std::string> elems;
        if (i == 0 && (!system.empty() || !conv.tools.empty())) {
            std::string tool_text = conv.tools.empty() ? "" : format_tools(conv.tools);
            elems.push_back("<|im_start|>system\n" + system + tool_text + "<|im_end|>\n");
        }
        switch (m.role) {
            case data::Role::user:
                elems.push_back("<|im_start|>user\n" + m.content + "<|im_end|>\n<|im_start|>assistant\n");
                break;
            case data::Role::assistant: elems.push_back(m.content + "<|im_end|>\n"); break;
            case data::Role::observation:
                elems.push_back("<|im_start|>user\n<tool_response>\n" + m.content +
                                "\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
                break;
            case data::Role::function: elems.push_back(format_function(m.content) + "<|im_end|>\n"); break;
        }
        out.push_back(std::move(elems));
    }
    return out;
}

std::vector<EncodedPair> QwenTrainTemplate::encode_multiturn(const data::Conversation& conv) const {
    if (conv.messages.size() % 2 != 0)
        throw DataError(ErrorInfo{}.msg("conversation has an odd number of messages")
                            .expected("(prompt, response) pairs").found(std::to_string(conv.messages.size()) + " messages"));
    std::vector<std::vector<std::string>> sl = slots(conv);
    std::vector<std::vector<int32_t>> ids(sl.size());
    for (size_t i = 0; i < sl.size(); ++i) {
        for (size_t k = 0; k < sl[i].size(); ++k) {
            if (sl[i][k].empty()) continue;
            // turn 0's system slot is the same text in most examples: cached
            std::vector<int32_t> part = (i == 0 && k == 0 && sl[i].size() == 2) ? encode_cached(sl[i][k]) : encode_(sl[i][k]);
            ids[i].insert(ids[i].end(), part.begin(), part.end());
        }
    }
    std::vector<EncodedPair> pairs;
    for (size_t i = 0; i + 1 < ids.size(); i += 2) pairs.push_back({std::move(ids[i]), std::move(ids[i + 1])});
    return pairs;
}

namespace {
bool contains_seq(const std::vector<int32_t>& hay, size_t len, const std::vector<int32_t>& needle) {
    if (needle.empty() || len < needle.size()) return false;
    for (size_t i = 0; i + needle.size() <= len; ++i)
        if (std::equal(needle.begin(), needle.end(), hay.begin() + static_cast<std::ptrdiff_t>(i))) return true;
    return false;
}
}  // namespace

EncodedExample QwenTrainTemplate::encode(const data::Conversation& conv) const {
    std::vector<EncodedPair> pairs = encode_multiturn(conv);
    EncodedExample ex;
    for (const auto& p : pairs) ex.full_length += static_cast<int64_t>(p.source.size() + p.target.size());
    if (opts_.mask_history) std::reverse(pairs.begin(), pairs.end());  // last turn gets the budget first
    int64_t total = 0;
    std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pieces;  // (ids, labels) per turn
    for (size_t turn = 0; turn < pairs.size(); ++turn) {
        if (total >= opts_.cutoff_len) {
            ex.truncated = true;  // this turn and later ones are dropped
            break;
        }
        const auto& src = pairs[turn].source;
        const auto& tgt = pairs[turn].target;
        auto [src_len, tgt_len] = infer_seqlen(static_cast<int64_t>(src.size()), static_cast<int64_t>(tgt.size()),
                                               opts_.cutoff_len - total);
        total += src_len + tgt_len;
        if (src_len < static_cast<int64_t>(src.size()) || tgt_len < static_cast<int64_t>(tgt.size())) ex.truncated = true;
        bool target_trained = !(opts_.mask_history && turn != 0);
        if (target_trained && tgt_len > 0 && contains_seq(tgt, tgt.size(), im_end_ids_) &&
            !contains_seq(tgt, static_cast<size_t>(tgt_len), im_end_ids_))
            ex.response_lost_eos = true;
        std::vector<int32_t> ids(src.begin(), src.begin() + src_len);
        ids.insert(ids.end(), tgt.begin(), tgt.begin() + tgt_len);
        std::vector<int32_t> labels;
        labels.reserve(ids.size());
        if (opts_.train_on_prompt) labels.insert(labels.end(), src.begin(), src.begin() + src_len);
        else labels.insert(labels.end(), static_cast<size_t>(src_len), IGNORE_INDEX);
        if (target_trained) labels.insert(labels.end(), tgt.begin(), tgt.begin() + tgt_len);
        else labels.insert(labels.end(), static_cast<size_t>(tgt_len), IGNORE_INDEX);
        pieces.emplace_back(std::move(ids), std::move(labels));
    }
    if (opts_.mask_history) std::reverse(pieces.begin(), pieces.end());
    ex.input_ids.reserve(static_cast<size_t>(total));
    ex.labels.reserve(static_cast<size_t>(total));
    for (auto& p : pieces) {
        ex.input_ids.insert(ex.input_ids.end(), p.first.begin(), p.first.end());
        ex.labels.insert(ex.labels.end(), p.second.begin(), p.second.end());
    }
    return ex;
}

namespace {
// Workers for n examples: `threads` (0 = all cores), at most one per 64 examples.
int worker_count(size_t n, int threads) {
    int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return static_cast<int>(std::min<size_t>(static_cast<size_t>(t), std::max<size_t>(1, n / 64)));
}

// fn(worker, i) for every i in [0, n), item i on worker i % t; a worker's exception stops
// that worker and is rethrown as one DataError after all have joined.
template <typename Fn>
void run_strided(size_t n, int t, const Fn& fn) {
    std::vector<std::string> errors(static_cast<size_t>(t));
    auto work = [&](int w) {
        try {
            for (size_t i = static_cast<size_t>(w); i < n; i += static_cast<size_t>(t)) fn(w, i);
        } catch (const std::exception& e) {
            errors[static_cast<size_t>(w)] = e.what();
        }
    };
    if (t == 1) {
        work(0);
    } else {
        std::vector<std::thread> pool;
        for (int w = 0; w < t; ++w) pool.emplace_back(work, w);
        for (auto& th : pool) th.join();
    }
    for (const auto& e : errors)
        if (!e.empty()) throw DataError(ErrorInfo{}.msg("encoding failed: " + e));
}
}  // namespace

std::vector<EncodedExample> encode_conversations(const QwenTrainTemplate& tpl,
                                                 const std::vector<data::Conversation>& convs, int threads) {
    std::vector<EncodedExample> out(convs.size());
    run_strided(convs.size(), worker_count(convs.size(), threads),
                [&](int, size_t i) { out[i] = tpl.encode(convs[i]); });
    return out;
}

// ---------------------------------------------------------------- stats

const std::vector<double>& TokenStats::bucket_bounds() {
    static const std::vector<double> b = {0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 1e300};
    return b;
}

void TokenStats::add(const EncodedExample& ex) {
    ++examples;
    if (ex.full_length > cutoff_len) ++truncated;
    if (ex.response_lost_eos) ++lost_eos;
    total_tokens += static_cast<int64_t>(ex.input_ids.size());
    for (int32_t l : ex.labels)
        if (l != IGNORE_INDEX) ++trained_tokens;
    max_length = std::max(max_length, ex.full_length);
    const auto& b = bucket_bounds();
    for (size_t i = 0; i < b.size(); ++i)
        if (static_cast<double>(ex.full_length) <= b[i] * static_cast<double>(cutoff_len)) {
            ++histogram[i];
            break;
        }
}

void TokenStats::merge(const TokenStats& o) {
    examples += o.examples;
    truncated += o.truncated;
    lost_eos += o.lost_eos;
    total_tokens += o.total_tokens;
    trained_tokens += o.trained_tokens;
    max_length = std::max(max_length, o.max_length);
    for (size_t i = 0; i < histogram.size(); ++i) histogram[i] += o.histogram[i];
}

void accumulate_token_stats(const QwenTrainTemplate& tpl, const std::vector<data::Conversation>& convs,
                            TokenStats& stats, int threads,
                            const std::function<void(size_t, const EncodedExample&)>& on_example) {
    stats.cutoff_len = tpl.options().cutoff_len;
    const int t = worker_count(convs.size(), threads);
    std::vector<TokenStats> part(static_cast<size_t>(t));
    for (auto& p : part) p.cutoff_len = stats.cutoff_len;
    std::mutex cb_mu;
    run_strided(convs.size(), t, [&](int w, size_t i) {
        EncodedExample ex = tpl.encode(convs[i]);
        part[static_cast<size_t>(w)].add(ex);
        if (on_example) {
            std::lock_guard<std::mutex> lock(cb_mu);
            on_example(i, ex);
        }
    });
    for (const auto& p : part) stats.merge(p);
}

}  // namespace pdsd::tokenizer
