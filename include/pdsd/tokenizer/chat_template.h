// Qwen2.5 chat templates.
//
// 1. render_qwen_chat(): the inference prompt, the no-tools part of Qwen2.5's Jinja template
//    (default system "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.").
//
// 2. QwenTrainTemplate: LLaMA-Factory's `qwen` training template (template.py, supervised.py
//    of LLaMA-Factory 0.9.5). Each slot is tokenized on its own, exactly like LF:
//      turn 0 source: "<|im_start|>system\n{system+tools}<|im_end|>\n" | "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
//      turn t source: user slot, or "<|im_start|>user\n<tool_response>\n{obs}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
//      target:        "{response}<|im_end|>\n" (function calls as <tool_call>\n{json}\n</tool_call>)
//    ("|" = separate encode calls; ids are concatenated, BPE never merges across them).
//    Source labels are -100 unless train_on_prompt; every response is trained (history too)
//    unless mask_history, which keeps only the last turn's labels and gives it priority in the
//    cutoff_len budget (pairs processed in reverse). Truncation follows LF's infer_seqlen.
//
//   auto tok = tokenizer::Tokenizer::load("/path/to/model");
//   tokenizer::QwenTrainTemplate tpl(tokenizer::encoder_of(tok), {.cutoff_len = 4096});
//   for (const auto& conv : data::load_conversations("data", {"alpaca_zh_demo"})) {
//       tokenizer::EncodedExample ex = tpl.encode(conv);  // ex.input_ids, ex.labels (-100 = ignored)
//   }
//
// Level 2 (tokenizer): includes core and data only; torch-free. The encoder is a function, so
// the template logic is testable without the BPE and any tokenizer can be plugged in.
#pragma once

#include "pdsd/data/dataset.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pdsd::tokenizer {

class Tokenizer;

constexpr int32_t IGNORE_INDEX = -100;

inline constexpr const char* kQwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// text -> ids, like HF `tokenizer.encode(text, add_special_tokens=False)`; must be thread-safe.
using EncodeFn = std::function<std::vector<int32_t>(std::string_view)>;

// Wraps Tokenizer::encode (the Tokenizer must outlive the function).
EncodeFn encoder_of(const Tokenizer& tok);

// ---------------------------------------------------------------- inference rendering

struct ChatMessage {
    std::string role;  // "system", "user", "assistant" (any other role is rendered verbatim)
    std::string content;
};

// Qwen2.5's chat template without tools: a leading system message is rendered first, or the
// default system prompt when there is none; add_generation_prompt appends "<|im_start|>assistant\n".
std::string render_qwen_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true,
                             const std::string& default_system = kQwenDefaultSystem);

// ---------------------------------------------------------------- training encoding

struct TemplateOptions {
    int64_t cutoff_len = 2048;          // LF default; the spec's run uses 4096
    bool train_on_prompt = false;
    bool mask_history = false;
    std::optional<std::string> default_system;  // LF --default_system; nullopt = Qwen's
};

struct EncodedExample {
    std::vector<int32_t> input_ids;
    std::vector<int32_t> labels;       // same length; IGNORE_INDEX where not trained
    int64_t full_length = 0;           // tokens before cutoff_len truncation
    bool truncated = false;            // some turn was shortened or dropped
    bool response_lost_eos = false;    // a trained response was cut before its <|im_end|>
};

// One (source, target) pair per turn, as LF's Template.encode_multiturn returns them.
struct EncodedPair {
    std::vector<int32_t> source, target;
};

// LF's processor_utils.infer_seqlen: (source_len, target_len) after fitting into cutoff_len.
std::pair<int64_t, int64_t> infer_seqlen(int64_t source_len, int64_t target_len, int64_t cutoff_len);

// Python json.dumps(value, ensure_ascii=False) (", " and ": " separators, keys in order).
std::string python_json_dumps(const nlohmann::ordered_json& value);

class QwenTrainTemplate {
public:
    QwenTrainTemplate(EncodeFn encode, TemplateOptions options = {});

    const TemplateOptions& options() const { return opts_; }
    const std::string& default_system() const { return default_system_; }

    // The slot strings of each message, before tokenization (element lists of LF's _encode).
    // Throws DataError for a malformed function-call or tools JSON.
    std::vector<std::vector<std::string>> slots(const data::Conversation& conv) const;
    std::vector<EncodedPair> encode_multiturn(const data::Conversation& conv) const;
    // input_ids + labels with cutoff_len truncation and masking (LF supervised processor).
    EncodedExample encode(const data::Conversation& conv) const;

private:
    std::vector<int32_t> encode_cached(const std::string& text) const;

    EncodeFn encode_;
    TemplateOptions opts_;
    std::string default_system_;
    std::vector<int32_t> im_end_ids_;
    // The system slot repeats in every example: cache its ids (a few distinct strings).
    mutable std::mutex cache_mu_;
    mutable std::map<std::string, std::vector<int32_t>> cache_;
};

// ---------------------------------------------------------------- token statistics

// Length statistics of a dataset against cutoff_len (`pdsd data validate --tokenizer`).
struct TokenStats {
    int64_t cutoff_len = 0;
    int64_t examples = 0;
    int64_t truncated = 0;          // examples longer than cutoff_len
    int64_t lost_eos = 0;           // examples whose trained response loses <|im_end|>
    int64_t total_tokens = 0;       // after truncation
    int64_t trained_tokens = 0;     // labels != -100, after truncation
    int64_t max_length = 0;         // before truncation
    // Full (untruncated) length histogram; bucket upper bounds as fractions of cutoff_len:
    // 1/4, 1/2, 3/4, 1, 3/2, 2, inf.
    std::vector<int64_t> histogram = std::vector<int64_t>(7, 0);
    static const std::vector<double>& bucket_bounds();
    void add(const EncodedExample& ex);
    void merge(const TokenStats& other);
};

// Encode conversations in batches on `threads` threads (0 = hardware concurrency) and fold
// them into stats; `on_example` (optional) sees each example with its index in `convs`.
void accumulate_token_stats(const QwenTrainTemplate& tpl, const std::vector<data::Conversation>& convs,
                            TokenStats& stats, int threads = 0,
                            const std::function<void(size_t, const EncodedExample&)>& on_example = nullptr);

}  // namespace pdsd::tokenizer
