// LoRA SFT trainer; see trainer.h for the contract and docs/training.md for the choices.
// Shapes: B micro-batch size, T padded sequence length, H hidden, V vocab.
#include "pdsd/train/trainer.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/core/plot.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/data/dataset.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/lora/inject.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/weights.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"
#include "pdsd/train/checkpointing.h"
#include "pdsd/train/distributed.h"
#include "pdsd/train/loss.h"
#include "pdsd/train/optimizer.h"
#include "pdsd/train/schedule.h"
#include "pdsd/train/trainer_log.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <torch/cuda.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>
#include <regex>
#include <sstream>

namespace fs = std::filesystem;
using nlohmann::json;

namespace pdsd::train {

namespace {

constexpr const char* kComp = "train";

struct Example {
    std::vector<int32_t> ids, labels;
    int64_t targets = 0;  // labels[1:] != -100
};

struct Batch {
    at::Tensor input_ids, attention_mask;  // (B, T) int64 on the device
    at::Tensor labels;                     // (B, T) int64 on the host (the loss finds targets there)
    int64_t targets = 0;                   // shifted target tokens
    int64_t tokens = 0;                    // real (unpadded) tokens
};

std::string hex(const uint8_t* p, size_t n) {
    static const char* d = "0123456789abcdef";
    std::string s(n * 2, '0');
    for (size_t i = 0; i < n; ++i) {
        s[2 * i] = d[p[i] >> 4];
        s[2 * i + 1] = d[p[i] & 15];
    }
    return s;
}

std::vector<uint8_t> unhex(const std::string& s) {
    std::vector<uint8_t> out(s.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
    return out;
}

c10::Device resolve_device(const std::string& name) {
    if (name == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
    return model::parse_device(name);
}

// Fingerprint of the base model without reading every weight: config.json plus each
// safetensors file's name, size and header (names, dtypes, shapes, offsets).
std::string model_fingerprint(const std::string& dir) {
    std::string acc;
    const fs::path p(dir);
    if (fs::exists(p / "config.json")) acc += read_file((p / "config.json").string());
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(p)) {
        if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        MappedFile m(f);
        uint64_t n = 0;
        if (m.size() >= 8) std::memcpy(&n, m.data(), 8);
        acc += fs::path(f).filename().string() + ":" + std::to_string(m.size()) + ":";
        acc.append(reinterpret_cast<const char*>(m.data()), static_cast<size_t>(std::min<uint64_t>(m.size(), 8 + n)));
    }
    return sha256_hex(acc);
}

// Every key that changes the training trajectory (not output/logging/saving keys).
json trajectory_hparams(const LfArgs& a) {
    const auto& t = a.training;
    const auto& f = a.finetuning;
    return json{{"learning_rate", t.learning_rate},
                {"lr_scheduler_type", t.lr_scheduler_type},
                {"warmup_steps", t.warmup_steps},
                {"warmup_ratio", t.warmup_ratio},
                {"weight_decay", t.weight_decay},
                {"adam_beta1", t.adam_beta1},
                {"adam_beta2", t.adam_beta2},
                {"adam_epsilon", t.adam_epsilon},
                {"max_grad_norm", t.max_grad_norm},
                {"per_device_train_batch_size", t.per_device_train_batch_size},
                {"gradient_accumulation_steps", t.gradient_accumulation_steps},
                {"num_train_epochs", t.num_train_epochs},
                {"max_steps", t.max_steps},
                {"seed", t.seed},
                {"bf16", t.bf16},
                {"fp16", t.fp16},
                {"lora_rank", f.lora_rank},
                {"lora_alpha", f.lora_alpha()},
                {"lora_dropout", f.lora_dropout},
                {"lora_target", f.lora_target},
                {"use_rslora", f.use_rslora},
                {"val_size", a.data.val_size}};
}

std::string data_fingerprint(const std::vector<Example>& all) {
    std::string acc;
    for (const auto& e : all) {
        acc.append(reinterpret_cast<const char*>(e.ids.data()), e.ids.size() * sizeof(int32_t));
        acc.append(reinterpret_cast<const char*>(e.labels.data()), e.labels.size() * sizeof(int32_t));
        acc.push_back('\n');
    }
    return sha256_hex(acc);
}

// Right-padded micro-batch; length rounded up to a multiple of 8 (LF's pad_to_multiple_of).
Batch collate(const std::vector<Example>& data, const std::vector<int64_t>& idx, int64_t pad_id, const c10::Device& dev) {
    size_t maxlen = 0;
    for (int64_t i : idx) maxlen = std::max(maxlen, data[i].ids.size());
    const int64_t T = static_cast<int64_t>((maxlen + 7) / 8 * 8), B = static_cast<int64_t>(idx.size());
    at::Tensor ids = at::full({B, T}, pad_id, at::kLong), mask = at::zeros({B, T}, at::kLong),
               lab = at::full({B, T}, kIgnoreIndex, at::kLong);
    auto ia = ids.accessor<int64_t, 2>();
    auto ma = mask.accessor<int64_t, 2>();
    auto la = lab.accessor<int64_t, 2>();
    Batch b;
    for (int64_t r = 0; r < B; ++r) {
        const Example& e = data[idx[r]];
        for (size_t t = 0; t < e.ids.size(); ++t) {
            ia[r][t] = e.ids[t];
            ma[r][t] = 1;
            la[r][t] = e.labels[t];
        }
        b.targets += e.targets;
        b.tokens += static_cast<int64_t>(e.ids.size());
    }
    // Asynchronous copies: from pageable memory CUDA stages the bytes right away, so the host
    // tensors may go, and nothing waits for the GPU work still queued (a plain copy would
    // synchronise the stream at every micro-batch).
    b.input_ids = ids.to(dev, /*non_blocking=*/true);
    b.attention_mask = mask.to(dev, /*non_blocking=*/true);
    b.labels = lab;
    return b;
}

// The generator LoRA dropout draws from on the training device (the CPU one, or the CUDA
// one of that GPU): its state is saved in checkpoints so a resumed run drops the same
// activations. Key in pdsd_resume.json: "rng_cpu" / "rng_cuda".
at::Generator dropout_generator(const c10::Device& dev) { return at::globalContext().defaultGenerator(dev); }
std::string rng_key(const c10::Device& dev) { return dev.is_cuda() ? "rng_cuda" : "rng_cpu"; }

// The seeded permutation of epoch `epoch` (same on every run and after resume).
std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(static_cast<uint64_t>(seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), rng);
    return order;
}

struct Layout {
    int64_t n = 0, bs = 1, accum = 1;
    int64_t micro_per_epoch() const { return (n + bs - 1) / bs; }
    int64_t steps_per_epoch() const { return (micro_per_epoch() + accum - 1) / accum; }
    // Micro-batch range [first, last) of step j (0-based) within its epoch.
    std::pair<int64_t, int64_t> micro_range(int64_t j) const {
        return {j * accum, std::min(micro_per_epoch(), (j + 1) * accum)};
    }
};

std::vector<std::string> checkpoints_in(const std::string& dir) {
    std::vector<std::pair<int64_t, std::string>> found;
    if (!fs::is_directory(dir)) return {};
    static const std::regex re("checkpoint-([0-9]+)");
    for (const auto& e : fs::directory_iterator(dir)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (e.is_directory() && std::regex_match(name, m, re) && fs::exists(e.path() / "pdsd_resume.json")) {
            found.emplace_back(std::stoll(m[1].str()), e.path().string());
        }
    }
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& f : found) out.push_back(f.second);
    return out;
}

class StatusLine {
public:
    explicit StatusLine(bool tty) : tty_(tty) {}
    ~StatusLine() { done(); }
    void show(const std::string& text) {
        if (!tty_) return;
        std::fprintf(stderr, "\r\033[K%s", text.c_str());
        std::fflush(stderr);
        shown_ = true;
    }
    void done() {
        if (tty_ && shown_) std::fprintf(stderr, "\n");
        shown_ = false;
    }
    bool tty() const { return tty_; }

private:
    bool tty_;
    bool shown_ = false;
};

std::string fmt_g(double v, int prec = 4) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*g", prec, v);
    return b;
}

void check_supported(const LfArgs& a) {
    if (a.finetuning.stage != "sft") {
        throw ConfigError(ErrorInfo{}.at("stage").expected("sft").found(a.finetuning.stage)
                              .hint("pdsd trains supervised fine-tuning only (pt/rm/ppo/dpo/kto are not implemented)"));
    }
    if (a.finetuning.finetuning_type != "lora") {
        throw ConfigError(ErrorInfo{}.at("finetuning_type").expected("lora").found(a.finetuning.finetuning_type));
    }
    if (a.model.model_name_or_path.empty()) throw ConfigError(ErrorInfo{}.at("model_name_or_path").msg("is required"));
    if (a.training.output_dir.empty()) throw ConfigError(ErrorInfo{}.at("output_dir").msg("is required"));
    if (a.data.dataset.empty()) throw ConfigError(ErrorInfo{}.at("dataset").msg("is required"));
    if (!a.data.template_name.empty() && a.data.template_name != "qwen") {
        throw ConfigError(ErrorInfo{}.at("template").expected("qwen").found(a.data.template_name)
                              .hint("pdsd implements LLaMA-Factory's qwen template (Qwen2 / Qwen2.5)"));
    }
    if (a.training.per_device_train_batch_size < 1 || a.training.gradient_accumulation_steps < 1) {
        throw ConfigError(ErrorInfo{}.at("per_device_train_batch_size / gradient_accumulation_steps").expected(">= 1"));
    }
    if (a.finetuning.lora_rank < 1) throw ConfigError(ErrorInfo{}.at("lora_rank").expected(">= 1").found(std::to_string(a.finetuning.lora_rank)));
    const auto& t = a.training;
    if (!t.do_train) {
        throw ConfigError(ErrorInfo{}.at("do_train").expected("true").found("false")
                              .hint("pdsd train always trains; evaluation-only runs are not implemented"));
    }
    auto positive = [](const char* key, int64_t v) {
        if (v <= 0) throw ConfigError(ErrorInfo{}.at(key).expected("a whole number >= 1").found(std::to_string(v)));
    };
    positive("save_steps", t.save_steps);
    positive("logging_steps", t.logging_steps);
    positive("per_device_eval_batch_size", t.per_device_eval_batch_size);
    auto non_negative = [](const char* key, double v, const char* hint) {
        if (!(v >= 0) || !std::isfinite(v)) throw ConfigError(ErrorInfo{}.at(key).expected(">= 0").found(fmt_g(v, 6)).hint(hint));
    };
    non_negative("num_train_epochs", t.num_train_epochs, "or set max_steps");
    non_negative("learning_rate", t.learning_rate, "LoRA SFT usually runs at 1e-4 to 2e-4");
    non_negative("val_size", a.data.val_size, "a fraction below 1, or a number of examples");
    non_negative("warmup_ratio", t.warmup_ratio, "a fraction of all steps, below 1");
    non_negative("weight_decay", t.weight_decay, "0 to 0.1 is usual");
    if (t.warmup_steps < 0) throw ConfigError(ErrorInfo{}.at("warmup_steps").expected(">= 0").found(std::to_string(t.warmup_steps)));
    if (t.eval_strategy != "no" && t.eval_strategy != "steps" && t.eval_strategy != "epoch") {
        throw ConfigError(ErrorInfo{}.at("eval_strategy").expected("no | steps | epoch").found("'" + t.eval_strategy + "'"));
    }
    const std::string& mix = a.data.mix_strategy;
    if (mix != "concat" && mix != "interleave_under" && mix != "interleave_over") {
        throw ConfigError(ErrorInfo{}.at("mix_strategy").expected("concat | interleave_under | interleave_over").found("'" + mix + "'"));
    }
    if (!a.data.eval_dataset.empty() && a.data.val_size > 0) {
        throw ConfigError(ErrorInfo{}.at("val_size / eval_dataset").msg("both set")
                              .hint("LLaMA-Factory evaluates on eval_dataset when it is given; drop val_size"));
    }
    if (t.report_to != "none" && !t.report_to.empty()) {
        log::warn(kComp, "report_to: " + t.report_to + " is not available; pdsd writes trainer_log.jsonl and trainer_state.json (plot_loss draws them)");
    }
}

// Warnings for recipes that run but will barely learn: warmup that never ends, or a peak
// rate far below what LoRA needs (LLaMA-Factory's LoRA examples use 1e-4).
void warn_weak_schedule(const LfArgs& a, const LrSchedule& s) {
    if (s.total_steps > 0 && s.warmup_steps >= s.total_steps) {
        log::warn(kComp, log::cat("warmup_steps (", s.warmup_steps, ") >= total steps (", s.total_steps,
                                  "): the learning rate never reaches learning_rate ", fmt_g(s.base_lr, 3), " (peak ",
                                  fmt_g(s.base_lr * static_cast<double>(s.total_steps) / static_cast<double>(std::max<int64_t>(1, s.warmup_steps)), 3),
                                  "); lower warmup_steps or use warmup_ratio 0.1"));
    }
    if (a.finetuning.finetuning_type == "lora" && s.base_lr > 0 && s.base_lr < 1e-5) {
        log::warn(kComp, "learning_rate " + fmt_g(s.base_lr, 3) + " is " + fmt_g(1e-4 / s.base_lr, 3) +
                             "x below LLaMA-Factory's LoRA examples (1e-4): the adapter will barely move");
    }
}

// --plot_loss after the run: a figure, never a reason to fail the training that made it.
void plot_losses(const std::string& out_dir) {
    try {
        plot::plot_trainer_state(out_dir, {"loss", "eval_loss"});
    } catch (const Error& e) {
        log::warn(kComp, std::string("training_loss.png not drawn: ") + e.what());
    }
}

// Conversations of `names`, mixed as LLaMA-Factory's mix_strategy does without
// interleave_probs: concat, or round robin over the datasets until the first runs out
// (interleave_under) or until every one has been seen whole, restarting the shorter ones
// (interleave_over).
std::vector<data::Conversation> mixed_conversations(const LfDataArgs& d, const std::vector<std::string>& names) {
    if (d.mix_strategy == "concat" || names.size() < 2) return data::load_conversations(d.dataset_dir, names, d.max_samples);
    std::vector<std::vector<data::Conversation>> sets;
    size_t shortest = SIZE_MAX, longest = 0;
    for (const auto& n : names) {
        sets.push_back(data::load_conversations(d.dataset_dir, {n}, d.max_samples));
        shortest = std::min(shortest, sets.back().size());
        longest = std::max(longest, sets.back().size());
    }
    const bool over = d.mix_strategy == "interleave_over";
    std::vector<data::Conversation> out;
    for (size_t i = 0; i < (over ? longest : shortest); ++i) {
        for (auto& set : sets) {
            if (set.empty()) continue;
            out.push_back(set[i % set.size()]);
        }
    }
    return out;
}


int64_t lora_param_count(const Qwen2Config& c, const std::vector<std::string>& targets, int64_t r) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim(), kv = c.num_key_value_heads * c.head_dim(),
                  I = c.intermediate_size;
    int64_t per_layer = 0;
    for (const auto& t : targets) {
        if (t == "q_proj") per_layer += r * (h + q);
        if (t == "k_proj" || t == "v_proj") per_layer += r * (h + kv);
        if (t == "o_proj") per_layer += r * (q + h);
        if (t == "gate_proj" || t == "up_proj" || t == "down_proj") per_layer += r * (h + I);
    }
    return per_layer * c.num_hidden_layers;
}

int64_t base_param_count(const Qwen2Config& c) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim(), kv = c.num_key_value_heads * c.head_dim(),
                  I = c.intermediate_size;
    int64_t layer = h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * I + 2 * h;
    return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + h;
}

}  // namespace

std::string TrainPlan::to_text() const {
    std::ostringstream o;
    o << "examples: " << examples << " train, " << eval_examples << " eval\n"
      << "tokens: " << tokens << " (" << target_tokens << " trained), truncated examples: " << truncated
      << ", responses that lost <|im_end|>: " << lost_eos << "\n"
      << "longest example: " << max_seq_len << " tokens (padded to a multiple of 8)\n"
      << "steps: " << steps_per_epoch << " per epoch, " << max_steps << " total, " << warmup_steps << " warmup\n"
      << "trainable params: " << trainable_params << " of " << total_params << " ("
      << fmt_g(100.0 * static_cast<double>(trainable_params) / static_cast<double>(std::max<int64_t>(1, total_params)), 4)
      << "%)\n"
      << "device: " << device << ", compute dtype: " << dtype << "\n"
      << "gradient checkpointing: " << (gradient_checkpointing ? "on" : "off") << "\n"
      << "peak memory estimate: " << fmt_g(peak_memory_gib, 3) << " GiB\n";
    return o.str();
}

TrainResult run_sft(const TrainOptions& opt) {
    LfArgs resolved = opt.args;
    check_supported(resolved);
    resolved.model.model_name_or_path = resolve_model_dir(resolved.model.model_name_or_path, "model_name_or_path", {".", "data"});
    const LfArgs& a = resolved;
    const auto& ta = a.training;
    const auto t_start = std::chrono::steady_clock::now();
    const std::string out_dir = ta.output_dir;

    // ---- device, dtype, tokenizer, data -------------------------------------------------
    // Data parallel (train/distributed.h): rank r of world_size, one process per device.
    const DistEnv denv = dist_env_from_environment();
    const int64_t world = denv.world_size, rank = denv.rank;
    const bool is_main = rank == 0;  // only rank 0 logs at info level and writes files
    if (!is_main && log::enabled(log::Level::info)) log::init("warn");
    c10::Device dev = resolve_device(a.model.device);
    if (world > 1 && dev.is_cuda()) dev = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(denv.local_rank));  // cuda:LOCAL_RANK
    c10::ScalarType dtype = c10::kFloat;
    if (dev.is_cuda() && ta.bf16) dtype = c10::kBFloat16;
    if (dev.is_cuda() && ta.fp16) {
        throw ConfigError(ErrorInfo{}.at("fp16").expected("bf16: true, or neither (fp32), on CUDA").found("fp16: true")
                              .hint("fp16 training needs loss scaling, which pdsd does not do yet; GPUs without bf16 "
                                    "(V100, T4) can train in fp32"));
    }
    if (!dev.is_cuda() && (ta.bf16 || ta.fp16)) {
        log::info(kComp, "bf16/fp16 requested on CPU: computing in fp32 (CPU has no fast half-precision matmul)");
    }
    const std::string dtype_name = dtype == c10::kBFloat16 ? "bf16" : dtype == c10::kHalf ? "fp16" : "fp32";

    const Qwen2Config cfg = load_qwen2_config(a.model.model_name_or_path);
    auto tok = tokenizer::Tokenizer::load(a.model.model_name_or_path);
    const int64_t pad_id = tok.token_to_id("<|endoftext|>").value_or(0);
    tokenizer::TemplateOptions topt;
    topt.cutoff_len = a.data.cutoff_len;
    topt.train_on_prompt = a.data.train_on_prompt;
    topt.mask_history = a.data.mask_history;
    topt.default_system = a.data.default_system;
    tokenizer::QwenTrainTemplate tpl(tokenizer::encoder_of(tok), topt);

    TrainPlan plan;
    auto encode_all = [&](const std::vector<data::Conversation>& convs, bool count) {
        std::vector<Example> out;
        out.reserve(convs.size());
        for (const auto& c : convs) {
            auto ex = tpl.encode(c);
            Example e;
            e.ids = std::move(ex.input_ids);
            e.labels = std::move(ex.labels);
            for (size_t i = 1; i < e.labels.size(); ++i) e.targets += e.labels[i] != kIgnoreIndex;
            if (count) {
                plan.tokens += static_cast<int64_t>(e.ids.size());
                plan.target_tokens += e.targets;
                plan.truncated += ex.truncated;
                plan.lost_eos += ex.response_lost_eos;
            }
            plan.max_seq_len = std::max<int64_t>(plan.max_seq_len, static_cast<int64_t>((e.ids.size() + 7) / 8 * 8));
            out.push_back(std::move(e));
        }
        return out;
    };
    std::vector<Example> all = encode_all(mixed_conversations(a.data, a.data.dataset), true);
    if (all.empty()) throw DataError(ErrorInfo{a.data.dataset_dir}.msg("no training examples").hint("check dataset / max_samples"));
    // eval_dataset: LLaMA-Factory's separate evaluation set (instead of a val_size split).
    std::vector<Example> eval_given =
        a.data.eval_dataset.empty() ? std::vector<Example>{} : encode_all(data::load_conversations(a.data.dataset_dir, a.data.eval_dataset, a.data.max_samples), false);
    std::string data_hash = data_fingerprint(all);
    if (!eval_given.empty()) data_hash = sha256_hex(data_hash + data_fingerprint(eval_given));

    // val_size split: seeded shuffle, the first n_val go to eval (HF train_test_split's role).
    std::vector<Example> train_set, eval_set;
    {
        const int64_t n = static_cast<int64_t>(all.size());
        int64_t n_val = 0;
        if (a.data.val_size > 0) {
            n_val = a.data.val_size < 1 ? static_cast<int64_t>(std::ceil(a.data.val_size * static_cast<double>(n)))
                                        : static_cast<int64_t>(a.data.val_size);
            if (n_val >= n) {
                throw ConfigError(ErrorInfo{}.at("val_size").expected("fewer eval examples than the " + std::to_string(n) + " examples")
                                      .found(std::to_string(n_val)));
            }
        }
        std::vector<int64_t> order = epoch_order(n, ta.seed, -1);
        for (int64_t i = 0; i < n; ++i) (i < n_val ? eval_set : train_set).push_back(std::move(all[order[i]]));
        all.clear();
        if (!eval_given.empty()) eval_set = std::move(eval_given);
    }
    // With world_size ranks an optimizer step spans accum x world_size micro-batches of the
    // global order; micro-batch k of the step goes to rank k % world_size (accelerate's
    // BatchSamplerShard), so the step sees the same examples as one process with
    // accum x world_size accumulation.
    Layout lay{static_cast<int64_t>(train_set.size()), ta.per_device_train_batch_size, ta.gradient_accumulation_steps * world};
    const int64_t steps_per_epoch = lay.steps_per_epoch();
    const int64_t max_steps = ta.max_steps > 0 ? ta.max_steps
                                               : static_cast<int64_t>(std::ceil(ta.num_train_epochs * static_cast<double>(steps_per_epoch)));
    LrSchedule sched{parse_schedule_kind(ta.lr_scheduler_type), ta.learning_rate,
                     resolve_warmup_steps(ta.warmup_steps, ta.warmup_ratio, max_steps), max_steps};
    const auto targets = lora::resolve_lora_targets(a.finetuning.lora_target);
    if (is_main) warn_weak_schedule(a, sched);

    plan.examples = lay.n;
    plan.eval_examples = static_cast<int64_t>(eval_set.size());
    plan.steps_per_epoch = steps_per_epoch;
    plan.max_steps = max_steps;
    plan.warmup_steps = sched.warmup_steps;
    plan.trainable_params = lora_param_count(cfg, targets, a.finetuning.lora_rank);
    plan.total_params = base_param_count(cfg) + plan.trainable_params;
    plan.device = dev.str();
    plan.dtype = dtype_name;
    plan.gradient_checkpointing = ta.checkpointing_enabled();
    {
        // Rough peak: weights + LoRA (param, grad, 2 AdamW moments, fp32) + saved activations
        // (~ (14 H + 4 I) values per token per layer, as autograd keeps them; with gradient
        // checkpointing only each layer's input, H values per token per layer, plus one layer's
        // full set while it is recomputed in backward) + one CE chunk (chunk x V fp32, ~3
        // temporaries) + the kept CE gradient.
        const double bytes = dtype == c10::kFloat ? 4 : 2;
        const double tokens = static_cast<double>(ta.per_device_train_batch_size * std::min(plan.max_seq_len, a.data.cutoff_len + 8));
        const double per_layer = tokens * (14.0 * static_cast<double>(cfg.hidden_size) + 4.0 * static_cast<double>(cfg.intermediate_size)) * bytes;
        const double act = plan.gradient_checkpointing
                               ? tokens * static_cast<double>(cfg.num_hidden_layers * cfg.hidden_size) * bytes + per_layer
                               : per_layer * static_cast<double>(cfg.num_hidden_layers);
        const double ce = static_cast<double>(opt.ce_chunk_tokens) * static_cast<double>(cfg.vocab_size) * 4 * 3 +
                          tokens * static_cast<double>(cfg.hidden_size) * bytes;
        const double w = static_cast<double>(base_param_count(cfg)) * bytes + static_cast<double>(plan.trainable_params) * 16;
        plan.peak_memory_gib = (w + act + ce) / (1024.0 * 1024.0 * 1024.0);
    }
    if (opt.dry_run) {
        if (is_main) std::cout << plan.to_text();
        return TrainResult{0, max_steps, 0.0, 0, plan.trainable_params};
    }
    for (const auto& line : [&] {
             std::vector<std::string> v;
             std::istringstream in(plan.to_text());
             std::string l;
             while (std::getline(in, l)) v.push_back(l);
             return v;
         }()) {
        log::info(kComp, line);
    }

    std::unique_ptr<DataParallel> dp = make_data_parallel(denv, std::chrono::minutes(30), dev);
    if (dp) log::info(kComp, log::cat("data parallel: ", world, " ranks, ", ta.per_device_train_batch_size, " x ",
                                      ta.gradient_accumulation_steps, " x ", world, " = ",
                                      ta.per_device_train_batch_size * ta.gradient_accumulation_steps * world, " examples per step"));

    // ---- resume decision ------------------------------------------------------------------
    std::string resume_dir;
    if (ta.resume_from_checkpoint && !ta.resume_from_checkpoint->empty()) {
        resume_dir = *ta.resume_from_checkpoint;
        if (!fs::exists(fs::path(resume_dir) / "pdsd_resume.json")) {
            throw ConfigError(ErrorInfo{resume_dir}.at("resume_from_checkpoint").msg("is not a pdsd checkpoint folder")
                                  .expected("a checkpoint-N folder holding pdsd_resume.json"));
        }
    } else if (!ta.overwrite_output_dir) {
        auto cks = checkpoints_in(out_dir);
        if (!cks.empty()) {
            resume_dir = cks.back();
            log::info(kComp, "found " + resume_dir + ": resuming from it (set overwrite_output_dir to start over)");
        } else if (fs::exists(fs::path(out_dir) / "adapter_model.safetensors")) {
            throw ConfigError(ErrorInfo{out_dir}.at("output_dir").msg("already holds a trained adapter and no checkpoint")
                                  .hint("use another output_dir, or set overwrite_output_dir: true"));
        }
    }
    if (dp) dp->barrier();  // every rank has chosen its checkpoint before rank 0 deletes any
    if (ta.overwrite_output_dir && fs::exists(out_dir) && is_main) {
        for (const auto& ck : checkpoints_in(out_dir)) fs::remove_all(ck);
        fs::remove(fs::path(out_dir) / "trainer_log.jsonl");
    }
    if (is_main) fs::create_directories(out_dir);

    const std::string model_hash = model_fingerprint(a.model.model_name_or_path);
    json hparams = trajectory_hparams(a);
    if (world > 1) hparams["world_size"] = world;  // the global batch; absent for one process (older checkpoints stay valid)
    const std::string hparams_hash = sha256_hex(hparams.dump());
    json resume_info;
    if (!resume_dir.empty()) {
        resume_info = read_json_file((fs::path(resume_dir) / "pdsd_resume.json").string());
        auto refuse = [&](const std::string& what, const std::string& hint) {
            throw ConfigError(ErrorInfo{resume_dir}.at("resume").msg(what + " differs from the checkpoint's").hint(hint));
        };
        if (resume_info.value("data_sha256", "") != data_hash) {
            refuse("the tokenized training data", "the dataset, template, cutoff_len or tokenizer changed; use a new output_dir");
        }
        if (resume_info.value("model_sha256", "") != model_hash) refuse("the base model", "model_name_or_path points at other weights");
        if (resume_info.value("hparams_sha256", "") != hparams_hash) {
            std::string diff;
            const json old = resume_info.value("hparams", json::object());
            for (auto it = hparams.begin(); it != hparams.end(); ++it) {
                if (!old.contains(it.key()) || old[it.key()] != it.value()) {
                    diff += " " + it.key() + ": " + (old.contains(it.key()) ? old[it.key()].dump() : "?") + " -> " + it.value().dump() + ";";
                }
            }
            refuse("a hyper-parameter", "changed:" + diff + " restore them or use a new output_dir");
        }
    }

    // ---- model + LoRA -------------------------------------------------------------------------
    at::manual_seed(static_cast<uint64_t>(ta.seed));  // HF set_seed before the adapter is created
    model::LoadOptions lo;
    lo.device = dev.str();
    lo.dtype = dtype_name;
    model::LoadedModel lm = model::load_qwen2(a.model.model_name_or_path, lo);
    auto& net = *lm.model;
    lora::LoraHyper hyper{a.finetuning.lora_rank, static_cast<double>(a.finetuning.lora_alpha()), a.finetuning.lora_dropout,
                          a.finetuning.use_rslora};
    lora::LoraAttachment att = lora::attach_lora(net, hyper, targets, at::TensorOptions().dtype(at::kFloat).device(dev));
    if (dtype != c10::kFloat) {
        for (auto& layer : att.layers) layer->autocast = true;  // bf16 matmuls, fp32 master weights
    }
    if (!a.model.adapter_name_or_path.empty()) {
        if (a.model.adapter_name_or_path.size() > 1) {
            throw ConfigError(ErrorInfo{}.at("adapter_name_or_path").expected("one adapter to continue training")
                                  .hint("merge the others first (pdsd export)"));
        }
        att.load(lora::load_adapter(a.model.adapter_name_or_path[0]));
        log::info(kComp, "continuing training of adapter " + a.model.adapter_name_or_path[0]);
    }
    net.train();
    const at::Tensor lm_weight = net.lm_head ? net.lm_head->weight : net.model->embed_tokens->weight;  // (V, H), frozen
    std::vector<at::Tensor> params = att.parameters();
    const std::vector<std::string> pnames = att.parameter_names();
    log::info(kComp, log::cat("trainable params: ", att.num_parameters(), " || all params: ", plan.total_params,
                              " || trainable%: ", fmt_g(100.0 * static_cast<double>(att.num_parameters()) / static_cast<double>(plan.total_params), 4)));

    // Activation checkpointing per decoder layer (train/checkpointing.h): each layer's LoRA
    // matrices are inputs of its checkpoint node; the generator state is replayed when dropout
    // draws masks.
    model::ForwardOptions train_fo;
    train_fo.output_hidden_states = true;  // the last entry is after model.norm
    train_fo.last_logits_only = true;      // the full (B, T, V) logits are never built
    if (plan.gradient_checkpointing) {
        std::vector<std::vector<at::Tensor>> layer_params(net.model->layers.size());
        static const std::regex layer_re("model\\.layers\\.([0-9]+)\\.");
        for (size_t k = 0; k < att.modules.size(); ++k) {
            std::smatch m;
            if (!std::regex_search(att.modules[k], m, layer_re)) continue;
            auto& lp = layer_params.at(std::stoul(m[1].str()));
            lp.push_back(att.layers[k]->lora_A->weight);
            lp.push_back(att.layers[k]->lora_B->weight);
        }
        train_fo.layer_wrapper = checkpoint_every_layer(std::move(layer_params), a.finetuning.lora_dropout > 0);
        log::info(kComp, "gradient checkpointing: on (each decoder layer recomputed in backward; disable_gradient_checkpointing: true keeps activations)");
    }

    AdamW optim(params, AdamWOptions{ta.learning_rate, ta.adam_beta1, ta.adam_beta2, ta.adam_epsilon, ta.weight_decay});

    TrainerState state;
    state.max_steps = max_steps;
    state.num_train_epochs = ta.max_steps > 0 ? std::ceil(static_cast<double>(max_steps) / static_cast<double>(steps_per_epoch))
                                              : ta.num_train_epochs;
    state.logging_steps = ta.logging_steps;
    state.save_steps = ta.save_steps;
    state.eval_steps = ta.eval_steps.value_or(ta.logging_steps);
    state.train_batch_size = ta.per_device_train_batch_size;

    TrainerLogFile log_file((fs::path(out_dir) / "trainer_log.jsonl").string());
    int64_t start_step = 0;
    // Loss of every optimizer step of the run (resumed runs included): train_loss averages
    // these, window_* the steps since the last log line.
    double run_loss_sum = 0, window_loss = 0;
    int64_t run_logged = 0, window_steps = 0;
    if (!resume_dir.empty()) {
        lora::Adapter ad = lora::load_adapter(resume_dir);
        att.load(ad);
        SafetensorsFile of((fs::path(resume_dir) / "optimizer.safetensors").string());
        const int64_t step_count = resume_info.value("optimizer_step", int64_t{0});
        for (size_t i = 0; i < params.size(); ++i) {
            const TensorInfo* m1 = of.find(pnames[i] + ".exp_avg");
            const TensorInfo* m2 = of.find(pnames[i] + ".exp_avg_sq");
            if (!m1 || !m2) {
                throw FormatError(ErrorInfo{of.path()}.at(pnames[i]).msg("AdamW state missing"));
            }
            auto view = [&](const TensorInfo* ti) {
                return at::from_blob(const_cast<uint8_t*>(of.data(*ti)), ti->shape, at::kFloat);
            };
            optim.load_state(i, view(m1), view(m2), step_count);
        }
        state = TrainerState::load((fs::path(resume_dir) / "trainer_state.json").string());
        state.max_steps = max_steps;
        start_step = state.global_step;
        run_loss_sum = resume_info.value("loss_sum", 0.0);  // absent in checkpoints of pdsd < 0.2: resumed steps only
        run_logged = resume_info.value("loss_steps", int64_t{0});
        {
            std::string rng_hex = resume_info.value(rng_key(dev), std::string());
            if (rank > 0) {  // each rank's dropout draws differ: its own state
                const fs::path f = fs::path(resume_dir) / ("rng_state_" + std::to_string(rank) + ".hex");
                rng_hex = fs::exists(f) ? read_file(f.string()) : std::string();
            }
            auto bytes = unhex(rng_hex);
            if (!bytes.empty()) {
                at::Tensor rs = at::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, at::kByte).clone();
                at::Generator gen = dropout_generator(dev);  // a handle to the global generator
                gen.set_state(rs);
            }
        }
        if (is_main) log_file.truncate_after(start_step);
        const int64_t epoch_i = start_step / std::max<int64_t>(1, steps_per_epoch);
        log::info(kComp, log::cat("resumed from ", resume_dir, ": step ", start_step, "/", max_steps, ", next lr ",
                                  fmt_g(sched.lr(start_step), 6), ", data position epoch ", epoch_i, " micro-batch ",
                                  lay.micro_range(start_step - epoch_i * steps_per_epoch).first, " of ", lay.micro_per_epoch(),
                                  ", ", state.num_input_tokens_seen, " tokens seen"));
    } else if (is_main) {
        fs::remove(log_file.path());
    }

    // ---- helpers: eval, checkpoint ------------------------------------------------------------
    auto evaluate = [&]() -> double {
        at::NoGradGuard ng;
        net.eval();
        double sum = 0;
        int64_t n = 0;
        const int64_t ebs = ta.per_device_eval_batch_size;
        for (int64_t s = 0, bi = 0; s < static_cast<int64_t>(eval_set.size()); s += ebs, ++bi) {
            if (bi % world != rank) continue;  // eval batches are sharded like training micro-batches
            std::vector<int64_t> idx;
            for (int64_t i = s; i < std::min<int64_t>(s + ebs, static_cast<int64_t>(eval_set.size())); ++i) idx.push_back(i);
            Batch b = collate(eval_set, idx, pad_id, dev);
            model::ForwardOptions fo;
            fo.output_hidden_states = true;
            fo.last_logits_only = true;
            auto out = net.forward(b.input_ids, b.attention_mask, {}, nullptr, fo);
            LossSum ls = causal_lm_loss_sum(out.hidden_states.back(), lm_weight, b.labels, opt.ce_chunk_tokens);
            sum += ls.sum.item<double>();
            n += ls.n_tokens;
        }
        net.train();
        if (dp) {
            at::Tensor t = at::tensor({sum, static_cast<double>(n)}, at::kDouble);
            dp->all_reduce_sum(t);
            sum = t[0].item<double>();
            n = static_cast<int64_t>(std::llround(t[1].item<double>()));
        }
        return n > 0 ? sum / static_cast<double>(n) : 0.0;
    };

    auto save_checkpoint = [&](int64_t step) {
        const fs::path final_dir = fs::path(out_dir) / ("checkpoint-" + std::to_string(step));
        const fs::path tmp = fs::path(out_dir) / (".checkpoint-" + std::to_string(step) + ".tmp");
        if (is_main) {
            fs::remove_all(tmp);
            fs::create_directories(tmp);
        }
        if (dp) {  // ranks > 0 add their generator state (dropout), then rank 0 completes the folder
            dp->barrier();
            if (!is_main) {
                at::Tensor rs = dropout_generator(dev).get_state();
                write_file_atomic((tmp / ("rng_state_" + std::to_string(rank) + ".hex")).string(),
                                  hex(rs.data_ptr<uint8_t>(), static_cast<size_t>(rs.numel())));
            }
            dp->barrier();
            if (!is_main) {
                dp->barrier();  // rank 0 has renamed the folder
                return;
            }
        }
        lora::save_adapter(tmp.string(), att.to_adapter(a.model.model_name_or_path));
        // AdamW state: "<peft name>.exp_avg" / ".exp_avg_sq" fp32 (the step count is in pdsd_resume.json).
        std::vector<at::Tensor> keep;
        std::vector<TensorView> views;
        const int64_t opt_step = params.empty() ? 0 : optim.steps(params.size() - 1);  // one read of a device counter
        for (size_t i = 0; i < params.size(); ++i) {
            for (auto [suffix, t] : {std::pair<const char*, at::Tensor>{".exp_avg", optim.exp_avg(i)}, {".exp_avg_sq", optim.exp_avg_sq(i)}}) {
                keep.emplace_back();
                at::Tensor cpu = t.detach().to(at::kCPU, at::kFloat).contiguous();
                views.push_back(model::tensor_view(pnames[i] + suffix, cpu, keep.back()));
                if (!keep.back().defined()) keep.back() = cpu;
            }
        }
        write_safetensors((tmp / "optimizer.safetensors").string(), views, {{"format", "pt"}, {"optimizer", "torch.optim.AdamW"}});
        TrainerState cs = state;
        cs.save((tmp / "trainer_state.json").string());
        at::Tensor rng = dropout_generator(dev).get_state();
        json info = {{"global_step", step},
                     {"optimizer_step", opt_step},
                     {"scheduler", {{"type", schedule_kind_name(sched.kind)}, {"last_epoch", step}, {"base_lr", sched.base_lr},
                                    {"warmup_steps", sched.warmup_steps}, {"total_steps", sched.total_steps}, {"next_lr", sched.lr(step)}}},
                     {"data_position", {{"epoch", step / steps_per_epoch}, {"step_in_epoch", step % steps_per_epoch},
                                        {"shuffle", "mt19937_64(seed * 1000003 + epoch)"}}},
                     {rng_key(dev), hex(rng.data_ptr<uint8_t>(), static_cast<size_t>(rng.numel()))},
                     {"loss_sum", run_loss_sum + window_loss},
                     {"loss_steps", run_logged + window_steps},
                     {"data_sha256", data_hash},
                     {"model_sha256", model_hash},
                     {"hparams_sha256", hparams_hash},
                     {"hparams", hparams}};
        write_file_atomic((tmp / "pdsd_resume.json").string(), info.dump(2) + "\n");
        fs::remove_all(final_dir);
        fs::rename(tmp, final_dir);
        log::info(kComp, "saved " + final_dir.string());
        if (dp) dp->barrier();
        if (ta.save_total_limit && *ta.save_total_limit > 0) {
            auto cks = checkpoints_in(out_dir);
            while (static_cast<int64_t>(cks.size()) > *ta.save_total_limit) {
                fs::remove_all(cks.front());
                cks.erase(cks.begin());
            }
        }
    };

    // ---- the loop -------------------------------------------------------------------------------
    StatusLine status(opt.progress_bar && is_main);
    const auto t_loop = std::chrono::steady_clock::now();
    auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    int64_t tokens_here = 0;
    std::vector<int64_t> order;
    int64_t order_epoch = -1;
    TrainResult result;
    result.resumed_from = start_step;
    result.max_steps = max_steps;
    result.trainable_params = att.num_parameters();
    result.rank = rank;

    for (int64_t step = start_step; step < max_steps; ++step) {
        const int64_t epoch_i = step / steps_per_epoch, j = step % steps_per_epoch;
        if (epoch_i != order_epoch) {
            order = epoch_order(lay.n, ta.seed, epoch_i);
            order_epoch = epoch_i;
        }
        auto [m0, m1] = lay.micro_range(j);
        std::vector<std::vector<int64_t>> micro;
        int64_t total_targets = 0;
        int64_t local_targets = 0;
        for (int64_t m = m0; m < m1; ++m) {
            const bool mine = (m - m0) % world == rank;  // data parallel: micro-batch k of the step -> rank k % world
            std::vector<int64_t> idx;
            for (int64_t i = m * lay.bs; i < std::min(lay.n, (m + 1) * lay.bs); ++i) {
                idx.push_back(order[i]);
                total_targets += train_set[order[i]].targets;  // over every rank's micro-batches
                if (mine) local_targets += train_set[order[i]].targets;
            }
            if (mine) micro.push_back(std::move(idx));
        }
        // Loss of the step = sum of token CEs over all its micro-batches (of all ranks) / their
        // target count; the ranks' gradients are then summed.
        at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dev));  // on the device: one sync a step
        int64_t step_tokens = 0;
        for (const auto& idx : micro) {
            Batch b = collate(train_set, idx, pad_id, dev);
            auto out = net.forward(b.input_ids, b.attention_mask, {}, nullptr, train_fo);
            LossSum ls = causal_lm_loss_sum(out.hidden_states.back(), lm_weight, b.labels, opt.ce_chunk_tokens);
            at::Tensor loss = ls.sum / static_cast<double>(std::max<int64_t>(1, total_targets));
            loss.backward();
            loss_sum += loss.detach();
            step_tokens += b.tokens;
        }
        double step_loss = loss_sum.item<double>();
        bool interrupted = interrupt_requested();
        if (dp) {
            // One all-reduce per step: [every LoRA gradient (zeros when this rank had no
            // micro-batch), loss, target tokens, input tokens, interrupt flag].
            std::vector<at::Tensor> parts;
            for (auto& p : params) parts.push_back((p.grad().defined() ? p.grad() : at::zeros_like(p)).reshape(-1).to(at::kDouble));
            parts.push_back(at::tensor({step_loss, static_cast<double>(local_targets), static_cast<double>(step_tokens),
                                        interrupted ? 1.0 : 0.0}, at::TensorOptions().dtype(at::kDouble).device(dev)));
            at::Tensor flat = at::cat(parts);
            dp->all_reduce_sum(flat);
            int64_t off = 0;
            for (auto& p : params) {
                at::Tensor g = flat.narrow(0, off, p.numel()).view(p.sizes()).to(p.scalar_type());
                off += p.numel();
                if (p.grad().defined()) p.mutable_grad().copy_(g);
                else p.mutable_grad() = g;
            }
            at::Tensor tail = flat.narrow(0, off, 4).cpu();
            step_loss = tail[0].item<double>();
            const auto all_targets = static_cast<int64_t>(std::llround(tail[1].item<double>()));
            if (all_targets != total_targets) {
                throw InternalError(ErrorInfo{}.at("data parallel step " + std::to_string(step + 1))
                                        .expected(std::to_string(total_targets) + " target tokens over all ranks")
                                        .found(std::to_string(all_targets)).hint("every rank must see the same data and config"));
            }
            step_tokens = static_cast<int64_t>(std::llround(tail[2].item<double>()));
            interrupted = tail[3].item<double>() > 0;  // one rank's Ctrl-C stops all at the same step
        }
        state.num_input_tokens_seen += step_tokens;  // all ranks (HF gathers it across processes)
        tokens_here += step_tokens;
        const double grad_norm = clip_grad_norm(params, ta.max_grad_norm);  // max_grad_norm <= 0: the norm only
        optim.set_lr(sched.lr(step));  // LambdaLR: update step+1 runs at factor(step)
        optim.step();
        optim.zero_grad();
        state.global_step = step + 1;
        state.epoch = static_cast<double>(epoch_i) + static_cast<double>(m1) / static_cast<double>(lay.micro_per_epoch());
        window_loss += step_loss;
        ++window_steps;
        const int64_t gs = state.global_step;

        auto emit = [&](const json& rec) {
            state.log_history.push_back(rec);
            if (!is_main) return;
            auto line = trainer_log_line(rec, gs, max_steps, seconds_since(t_loop), gs - start_step,
                                         state.num_input_tokens_seen, tokens_here);
            log_file.append(line);
        };
        if (ta.logging_steps > 0 && (gs % ta.logging_steps == 0 || gs == max_steps)) {
            const double loss_avg = round_to(window_loss / static_cast<double>(window_steps), 4);
            json rec = {{"epoch", state.epoch},
                        {"grad_norm", grad_norm},
                        {"learning_rate", sched.lr(gs)},  // HF logs the rate of the next update
                        {"loss", loss_avg},
                        {"num_input_tokens_seen", state.num_input_tokens_seen},
                        {"step", gs}};
            emit(rec);
            run_loss_sum += window_loss;
            run_logged += window_steps;
            window_loss = 0;
            window_steps = 0;
            const double el = seconds_since(t_loop);
            const double tps = el > 0 ? static_cast<double>(tokens_here) / el : 0;
            const double eta = (gs - start_step) > 0 ? el / static_cast<double>(gs - start_step) * static_cast<double>(max_steps - gs) : 0;
            const std::string text = log::cat("step ", gs, "/", max_steps, " loss ", fmt_g(loss_avg, 6), " lr ", fmt_g(sched.lr(gs), 4),
                                              " grad_norm ", fmt_g(grad_norm, 4), " epoch ", fmt_g(state.epoch, 4), " ",
                                              static_cast<int64_t>(tps), " tok/s ETA ", format_timedelta(eta));
            if (status.tty()) status.show(text);
            else log::info(kComp, text);
        }
        const bool do_eval = !eval_set.empty() &&
                             ((ta.eval_strategy == "steps" && state.eval_steps > 0 && gs % state.eval_steps == 0) ||
                              (ta.eval_strategy == "epoch" && m1 == lay.micro_per_epoch()));
        if (do_eval) {
            const auto t_eval = std::chrono::steady_clock::now();
            const double el = eval_set.empty() ? 0 : evaluate();
            const double rt = seconds_since(t_eval);
            json rec = {{"epoch", state.epoch},
                        {"eval_loss", el},
                        {"eval_runtime", round_to(rt, 4)},
                        {"eval_samples_per_second", round_to(rt > 0 ? static_cast<double>(eval_set.size()) / rt : 0, 3)},
                        {"eval_steps_per_second", round_to(rt > 0 ? std::ceil(static_cast<double>(eval_set.size()) / static_cast<double>(ta.per_device_eval_batch_size)) / rt : 0, 3)},
                        {"step", gs}};
            emit(rec);
            status.done();
            log::info(kComp, log::cat("step ", gs, " eval_loss ", fmt_g(el, 6)));
        }
        if ((ta.save_steps > 0 && gs % ta.save_steps == 0) || interrupted) {  // HF: the last step too when it is a multiple
            status.done();
            save_checkpoint(gs);
        }
        if (interrupted) {
            log::warn(kComp, log::cat("interrupted: checkpoint-", gs, " saved; run the same command again to resume"));
            throw Interrupted();
        }
    }
    status.done();

    // ---- final outputs ----------------------------------------------------------------------------
    if (window_steps > 0) {
        run_loss_sum += window_loss;
        run_logged += window_steps;
    }
    const double runtime = seconds_since(t_start);
    result.global_step = state.global_step;
    result.train_loss = run_logged > 0 ? run_loss_sum / static_cast<double>(run_logged) : 0.0;
    const double n_samples = static_cast<double>(lay.n) * state.num_train_epochs;
    json end_rec = {{"epoch", state.epoch},
                    {"step", state.global_step},
                    {"total_flos", 0.0},
                    {"train_loss", result.train_loss},
                    {"train_runtime", round_to(runtime, 4)},
                    {"train_samples_per_second", round_to(runtime > 0 ? n_samples / runtime : 0, 3)},
                    {"train_steps_per_second", round_to(runtime > 0 ? static_cast<double>(max_steps - start_step) / runtime : 0, 3)}};
    state.log_history.push_back(end_rec);
    const bool final_eval = !eval_set.empty() && ta.eval_strategy != "no";
    const double final_eval_loss = final_eval ? evaluate() : 0.0;  // collective: every rank
    if (is_main) {
        lora::save_adapter(out_dir, att.to_adapter(a.model.model_name_or_path));
        state.save((fs::path(out_dir) / "trainer_state.json").string());
        json train_results = end_rec;
        train_results.erase("step");
        write_file_atomic((fs::path(out_dir) / "train_results.json").string(), train_results.dump(4) + "\n");
        json all_results = train_results;
        if (final_eval) {
            json er = {{"epoch", state.epoch}, {"eval_loss", final_eval_loss}};
            write_file_atomic((fs::path(out_dir) / "eval_results.json").string(), er.dump(4) + "\n");
            all_results["eval_loss"] = final_eval_loss;
        }
        write_file_atomic((fs::path(out_dir) / "all_results.json").string(), all_results.dump(4) + "\n");
        if (a.finetuning.plot_loss) plot_losses(out_dir);
    }
    if (dp) dp->barrier();  // no rank exits (closing the store) before rank 0 has written
    if (dev.is_cuda()) {  // the measured peak, to set against the --dry-run estimate
        const auto stats = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(dev.index());
        const double peak = static_cast<double>(stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
        log::info(kComp, log::cat("peak CUDA memory allocated: ", fmt_g(peak / (1024.0 * 1024.0 * 1024.0), 4), " GiB (estimate ",
                                  fmt_g(plan.peak_memory_gib, 4), " GiB)"));
    }
    log::info(kComp, log::cat("done: ", state.global_step, " steps, train_loss ", fmt_g(result.train_loss, 6), ", adapter in ", out_dir));
    return result;
}

}  // namespace pdsd::train
