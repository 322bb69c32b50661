// SFT trainer (LoRA / freeze / full) as a recipe of steps; see trainer.h for the contract
// and docs/training.md for the choices.
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
#include "pdsd/model/loader.h"
#include "pdsd/model/qlora_base.h"
#include "pdsd/model/weights.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"
#include "pdsd/train/checkpointing.h"
#include "pdsd/train/distributed.h"
#include "pdsd/train/loss.h"
#include "pdsd/train/optimizer.h"
#include "pdsd/train/schedule.h"
#include "pdsd/train/trainer_log.h"
#include "pdsd/train/batching.h"
#include "pdsd/train/trainable.h"

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

// The QLoRA base storage these keys ask for (bits 0: none).
model::qlora::BaseQuant base_quant(const LfArgs& a) {
    const auto& m = a.model;
    return model::qlora::parse(m.quantization_bit.value_or(0), m.quantization_type, m.double_quantization);
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

// trajectory_hparams plus the method's keys; LoRA's set is unchanged (QLoRA adds the base's
// storage), so checkpoints of earlier pdsd versions still resume.
json method_hparams(const LfArgs& a) {
    json h = trajectory_hparams(a);
    const auto& f = a.finetuning;
    if (const auto q = base_quant(a); q.bits) {
        h["quantization_bit"] = q.bits;
        if (q.bits == 4) {  // with 8 these keys are ignored and stay out
            h["quantization_type"] = model::nf4::kind_name(q.kind);
            h["double_quantization"] = q.double_quant;
        }
    }
    if (f.finetuning_type == "lora") return h;
    h["finetuning_type"] = f.finetuning_type;
    h["pure_bf16"] = f.pure_bf16;
    if (f.finetuning_type == "freeze") {
        h["freeze_trainable_layers"] = f.freeze_trainable_layers;
        h["freeze_trainable_modules"] = f.freeze_trainable_modules;
        h["freeze_extra_modules"] = f.freeze_extra_modules;
    }
    for (const char* k : {"lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora"}) h.erase(k);
    return h;
}

// The generator LoRA dropout draws from on the training device (the CPU one, or the CUDA
// one of that GPU): its state is saved in checkpoints so a resumed run drops the same
// activations. Key in pdsd_resume.json: "rng_cpu" / "rng_cuda".
at::Generator dropout_generator(const c10::Device& dev) { return at::globalContext().defaultGenerator(dev); }
std::string rng_key(const c10::Device& dev) { return dev.is_cuda() ? "rng_cuda" : "rng_cpu"; }

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

// QLoRA keys (LLaMA-Factory ModelArguments): bitsandbytes' 4-bit or 8-bit base under LoRA only.
void check_quantization(const LfArgs& a) {
    const auto& m = a.model;
    if (!m.quantization_bit) return;
    if (a.finetuning.finetuning_type != "lora") {
        throw ConfigError(ErrorInfo{}.at("quantization_bit").msg("Quantization is only compatible with the LoRA method")
                              .found("finetuning_type " + a.finetuning.finetuning_type).hint("use finetuning_type: lora, or drop quantization_bit"));
    }
    if (m.quantization_method != "bnb") {
        throw ConfigError(ErrorInfo{}.at("quantization_method").expected("bnb").found(m.quantization_method)
                              .hint("pdsd implements bitsandbytes' NF4/FP4 and int8 formats"));
    }
    if (*m.quantization_bit == 0) {  // parse's "no quantization" is not a value LF accepts
        throw ConfigError(ErrorInfo{}.at("quantization_bit").expected("4 | 8").found("0").hint("drop quantization_bit for a float base"));
    }
    base_quant(a);  // ConfigError naming quantization_bit or quantization_type
}

void check_supported(const LfArgs& a) {
    if (a.finetuning.stage != "sft") {
        throw ConfigError(ErrorInfo{}.at("stage").expected("sft").found(a.finetuning.stage)
                              .hint("pdsd trains supervised fine-tuning only (pt/rm/ppo/dpo/kto are not implemented)"));
    }
    const std::string& ft = a.finetuning.finetuning_type;
    if (ft != "lora" && ft != "freeze" && ft != "full") {
        throw ConfigError(ErrorInfo{}.at("finetuning_type").expected("lora | freeze | full").found("'" + ft + "'")
                              .hint("QLoRA is finetuning_type lora with quantization_bit: 4 or 8"));
    }
    check_quantization(a);
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
      << "finetuning_type: " << finetuning_type << (quantization.empty() ? "" : " (QLoRA: base in " + quantization + ")") << "\n"
      << "device: " << device << ", compute dtype: " << dtype << "\n"
      << "gradient checkpointing: " << (gradient_checkpointing ? "on" : "off") << "\n"
      << "peak memory estimate: " << fmt_g(peak_memory_gib, 3) << " GiB\n";
    if (!methods.empty()) {
        o << "peak memory estimate by method (this batch, dtype and model):\n"
          << "  method    trainable params   GiB\n";
        const std::string self = quantization_bit ? "qlora-" + std::to_string(quantization_bit) : finetuning_type;
        for (const auto& m : methods) {
            char line[96];
            std::snprintf(line, sizeof line, "  %-9s %16lld   %s%s\n", m.method.c_str(), static_cast<long long>(m.trainable_params),
                          fmt_g(m.peak_memory_gib, 3).c_str(), m.method == self ? " <- this run" : "");
            o << line;
        }
    }
    return o.str();
}

namespace {

// The SFT recipe (torchtune's shape): each step one method, run in order by run_sft.
//   setup_data -> (dry run: plan only) -> setup_model -> resume -> train -> finish
// The method-specific part (what trains, how it is saved and restored) is the Trainable
// (train/trainable.h); everything here is the same for lora, freeze and full.
class SftRecipe {
public:
    explicit SftRecipe(const TrainOptions& opt) : opt_(opt), a_(opt.args), ta_(a_.training) {}

    void setup_environment();
    void setup_data();
    void make_plan();
    double estimate_peak_gib(const LfArgs& a, const ParamCount& pc) const;  // GiB, see make_plan
    TrainResult dry_run() const;
    void setup_model();
    void resume();
    void train();
    TrainResult finish();

private:
    double evaluate();
    void save_checkpoint(int64_t step);
    // One optimizer step: forward/backward over this rank's micro-batches of step `step`,
    // all-reduce, clip, AdamW. Returns {loss, grad_norm}; sets interrupted.
    std::pair<double, double> train_step(int64_t step, bool& interrupted);
    double seconds_since(std::chrono::steady_clock::time_point t0) const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

    const TrainOptions& opt_;
    LfArgs a_;
    const LfTrainingArgs& ta_;
    std::chrono::steady_clock::time_point t_start_ = std::chrono::steady_clock::now();
    std::string out_dir_;

    // environment
    DistEnv denv_;
    int64_t world_ = 1, rank_ = 0;
    bool is_main_ = true;  // only rank 0 logs at info level and writes files
    c10::Device dev_{c10::kCPU};
    c10::ScalarType dtype_ = c10::kFloat;
    std::string dtype_name_;
    Qwen2Config cfg_;

    // data
    int64_t pad_id_ = 0;
    std::vector<Example> train_set_, eval_set_;
    std::string data_hash_;
    Layout lay_;
    int64_t steps_per_epoch_ = 0, max_steps_ = 0;
    LrSchedule sched_;
    TrainPlan plan_;

    // model, optimizer, run state
    std::unique_ptr<DataParallel> dp_;
    model::LoadedModel lm_;
    std::unique_ptr<Trainable> trainable_;
    std::unique_ptr<AdamW> optim_;
    at::Tensor lm_weight_;  // (V, H): lm_head, or the tied embeddings
    model::ForwardOptions train_fo_;
    std::string resume_dir_, model_hash_, hparams_hash_;
    json hparams_, resume_info_;
    TrainerState state_;
    std::unique_ptr<TrainerLogFile> log_file_;
    int64_t start_step_ = 0;
    // Loss of every optimizer step of the run (resumed runs included): train_loss averages
    // these, window_* the steps since the last log line.
    double run_loss_sum_ = 0, window_loss_ = 0;
    int64_t run_logged_ = 0, window_steps_ = 0;
    int64_t tokens_here_ = 0;
    std::vector<int64_t> order_;  // the current epoch's example order
    int64_t order_epoch_ = -1;
    TrainResult result_;
};

// ---- setup: device, dtype ---------------------------------------------------------------------
void SftRecipe::setup_environment() {
    check_supported(a_);
    a_.model.model_name_or_path = resolve_model_dir(a_.model.model_name_or_path, "model_name_or_path", {".", "data"});
    out_dir_ = ta_.output_dir;
    // Data parallel (train/distributed.h): rank r of world_size, one process per device.
    denv_ = dist_env_from_environment();
    world_ = denv_.world_size;
    rank_ = denv_.rank;
    is_main_ = rank_ == 0;
    if (!is_main_ && log::enabled(log::Level::info)) log::init("warn");
    dev_ = resolve_device(a_.model.device);
    if (world_ > 1 && dev_.is_cuda()) dev_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(denv_.local_rank));  // cuda:LOCAL_RANK
    if (dev_.is_cuda() && (ta_.bf16 || a_.finetuning.pure_bf16)) dtype_ = c10::kBFloat16;
    if (dev_.is_cuda() && ta_.fp16) {
        throw ConfigError(ErrorInfo{}.at("fp16").expected("bf16: true, or neither (fp32), on CUDA").found("fp16: true")
                              .hint("fp16 training needs loss scaling, which pdsd does not do yet; GPUs without bf16 "
                                    "(V100, T4) can train in fp32"));
    }
    if (!dev_.is_cuda() && (ta_.bf16 || ta_.fp16 || a_.finetuning.pure_bf16)) {
        log::info(kComp, "bf16/fp16 requested on CPU: computing in fp32 (CPU has no fast half-precision matmul)");
    }
    dtype_name_ = dtype_ == c10::kBFloat16 ? "bf16" : dtype_ == c10::kHalf ? "fp16" : "fp32";
    cfg_ = load_qwen2_config(a_.model.model_name_or_path);
}

// ---- setup: data ----------------------------------------------------------------------------
void SftRecipe::setup_data() {
    const auto& d = a_.data;
    auto tok = tokenizer::Tokenizer::load(a_.model.model_name_or_path);
    pad_id_ = tok.token_to_id("<|endoftext|>").value_or(0);
    tokenizer::TemplateOptions topt;
    topt.cutoff_len = d.cutoff_len;
    topt.train_on_prompt = d.train_on_prompt;
    topt.mask_history = d.mask_history;
    topt.default_system = d.default_system;
    tokenizer::QwenTrainTemplate tpl(tokenizer::encoder_of(tok), topt);

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
                plan_.tokens += static_cast<int64_t>(e.ids.size());
                plan_.target_tokens += e.targets;
                plan_.truncated += ex.truncated;
                plan_.lost_eos += ex.response_lost_eos;
            }
            plan_.max_seq_len = std::max<int64_t>(plan_.max_seq_len, static_cast<int64_t>((e.ids.size() + 7) / 8 * 8));
            out.push_back(std::move(e));
        }
        return out;
    };
    std::vector<Example> all = encode_all(mixed_conversations(d, d.dataset), true);
    if (all.empty()) throw DataError(ErrorInfo{d.dataset_dir}.msg("no training examples").hint("check dataset / max_samples"));
    // eval_dataset: LLaMA-Factory's separate evaluation set (instead of a val_size split).
    std::vector<Example> eval_given =
        d.eval_dataset.empty() ? std::vector<Example>{} : encode_all(data::load_conversations(d.dataset_dir, d.eval_dataset, d.max_samples), false);
    data_hash_ = data_fingerprint(all);
    if (!eval_given.empty()) data_hash_ = sha256_hex(data_hash_ + data_fingerprint(eval_given));

    // val_size split: seeded shuffle, the first n_val go to eval (HF train_test_split's role).
    const int64_t n = static_cast<int64_t>(all.size());
    int64_t n_val = 0;
    if (d.val_size > 0) {
        n_val = d.val_size < 1 ? static_cast<int64_t>(std::ceil(d.val_size * static_cast<double>(n))) : static_cast<int64_t>(d.val_size);
        if (n_val >= n) {
            throw ConfigError(ErrorInfo{}.at("val_size").expected("fewer eval examples than the " + std::to_string(n) + " examples")
                                  .found(std::to_string(n_val)));
        }
    }
    std::vector<int64_t> order = epoch_order(n, ta_.seed, -1);
    for (int64_t i = 0; i < n; ++i) (i < n_val ? eval_set_ : train_set_).push_back(std::move(all[order[i]]));
    if (!eval_given.empty()) eval_set_ = std::move(eval_given);

    // With world_size ranks an optimizer step spans accum x world_size micro-batches of the
    // global order; micro-batch k of the step goes to rank k % world_size (accelerate's
    // BatchSamplerShard), so the step sees the same examples as one process with
    // accum x world_size accumulation.
    lay_ = Layout{static_cast<int64_t>(train_set_.size()), ta_.per_device_train_batch_size, ta_.gradient_accumulation_steps * world_};
    steps_per_epoch_ = lay_.steps_per_epoch();
    max_steps_ = ta_.max_steps > 0 ? ta_.max_steps : static_cast<int64_t>(std::ceil(ta_.num_train_epochs * static_cast<double>(steps_per_epoch_)));
    sched_ = LrSchedule{parse_schedule_kind(ta_.lr_scheduler_type), ta_.learning_rate,
                        resolve_warmup_steps(ta_.warmup_steps, ta_.warmup_ratio, max_steps_), max_steps_};
    if (is_main_) warn_weak_schedule(a_, sched_);
}

// ---- the plan (--dry-run, and logged at the start) --------------------------------------------
void SftRecipe::make_plan() {
    plan_.examples = lay_.n;
    plan_.eval_examples = static_cast<int64_t>(eval_set_.size());
    plan_.steps_per_epoch = steps_per_epoch_;
    plan_.max_steps = max_steps_;
    plan_.warmup_steps = sched_.warmup_steps;
    const ParamCount pc = count_parameters(a_, cfg_, a_.model.model_name_or_path);
    plan_.trainable_params = pc.trainable;
    plan_.total_params = pc.total;
    plan_.device = dev_.str();
    plan_.dtype = dtype_name_;
    plan_.finetuning_type = a_.finetuning.finetuning_type;
    plan_.quantization_bit = base_quant(a_).bits;
    plan_.quantization = base_quant(a_).describe();
    plan_.gradient_checkpointing = ta_.checkpointing_enabled();
    plan_.peak_memory_gib = estimate_peak_gib(a_, pc);
    // The same estimate for each of LLaMA-Factory's methods on this batch, dtype and model (the
    // project document's table): freeze with this config's freeze keys, LoRA with its LoRA keys.
    const int64_t layers = cfg_.num_hidden_layers;
    for (const std::string method : {"full", "freeze", "lora", "qlora-8", "qlora-4"}) {
        LfArgs m = a_;
        const bool qlora = method.rfind("qlora-", 0) == 0;
        m.finetuning.finetuning_type = qlora ? "lora" : method;
        m.model.quantization_bit.reset();
        if (qlora) m.model.quantization_bit = std::stoll(method.substr(6));
        if (qlora && a_.model.quantization_bit != 4) {  // the 4-bit keys of another run: LF's defaults
            m.model.quantization_type = "nf4";
            m.model.double_quantization = true;
        }
        if (a_.finetuning.finetuning_type != "freeze") {  // LF's defaults, within this model's depth
            m.finetuning.freeze_trainable_layers = std::min<int64_t>(m.finetuning.freeze_trainable_layers, layers);
        }
        const ParamCount c = count_parameters(m, cfg_, a_.model.model_name_or_path);
        plan_.methods.push_back({method, c.trainable, estimate_peak_gib(m, c)});
    }
}

// Rough peak: weights + trained tensors' (param, grad, 2 AdamW moments, fp32) + saved activations
// (~ (14 H + 4 I) values per token per layer, as autograd keeps them; with gradient
// checkpointing only each layer's input, H values per token per layer, plus one layer's full
// set while it is recomputed in backward) + one CE chunk (chunk x V fp32, ~3 temporaries) + the
// kept CE gradient. QLoRA: the decoder projections at their stored size (qlora_base.h; the
// 8-bit row scales taken at K = hidden_size).
double SftRecipe::estimate_peak_gib(const LfArgs& a, const ParamCount& pc) const {
    const double bytes = dtype_ == c10::kFloat ? 4 : 2;
    const double tokens = static_cast<double>(ta_.per_device_train_batch_size * std::min(plan_.max_seq_len, a.data.cutoff_len + 8));
    const double per_layer = tokens * (14.0 * static_cast<double>(cfg_.hidden_size) + 4.0 * static_cast<double>(cfg_.intermediate_size)) * bytes;
    const double act = plan_.gradient_checkpointing
                           ? tokens * static_cast<double>(cfg_.num_hidden_layers * cfg_.hidden_size) * bytes + per_layer
                           : per_layer * static_cast<double>(cfg_.num_hidden_layers);
    // A step never has more CE rows than tokens (a short batch makes a short chunk).
    const double ce = std::min(static_cast<double>(opt_.ce_chunk_tokens), tokens) * static_cast<double>(cfg_.vocab_size) * 4 * 3 +
                      tokens * static_cast<double>(cfg_.hidden_size) * bytes;
    const bool lora = a.finetuning.finetuning_type == "lora";
    const double base = static_cast<double>(lora ? pc.total - pc.trainable : pc.total);
    const model::qlora::BaseQuant q = base_quant(a);
    const double proj = q.bits ? static_cast<double>(projection_params(cfg_)) : 0.0;
    const double proj_bytes = q.bytes_per_weight(cfg_.hidden_size);
    const double w = (base - proj) * bytes + proj * proj_bytes + static_cast<double>(pc.trainable) * 16;
    return (w + act + ce) / (1024.0 * 1024.0 * 1024.0);
}

TrainResult SftRecipe::dry_run() const {
    if (is_main_) std::cout << plan_.to_text();
    TrainResult r;
    r.max_steps = max_steps_;
    r.trainable_params = plan_.trainable_params;
    return r;
}

// ---- setup: output folder, model, trainable set, optimizer -----------------------------------
void SftRecipe::setup_model() {
    {
        std::istringstream in(plan_.to_text());
        std::string l;
        while (std::getline(in, l)) log::info(kComp, l);
    }
    dp_ = make_data_parallel(denv_, std::chrono::minutes(30), dev_);
    if (dp_) log::info(kComp, log::cat("data parallel: ", world_, " ranks, ", ta_.per_device_train_batch_size, " x ",
                                       ta_.gradient_accumulation_steps, " x ", world_, " = ",
                                       ta_.per_device_train_batch_size * ta_.gradient_accumulation_steps * world_, " examples per step"));

    at::manual_seed(static_cast<uint64_t>(ta_.seed));  // HF set_seed before the adapter is created
    model::LoadOptions lo;
    lo.device = dev_.str();
    lo.dtype = dtype_name_;
    lm_ = model::load_qwen2(a_.model.model_name_or_path, lo);
    auto& net = *lm_.model;
    if (const model::qlora::BaseQuant q = base_quant(a_); q.bits) {
        int64_t float_bytes = 0;
        const int64_t b = model::qlora::quantize_base(net, q, &float_bytes);
        log::info(kComp, log::cat("QLoRA: decoder projections stored in ", plan_.quantization, ": ", fmt_g(static_cast<double>(b) / 1e6, 3),
                                  " MB instead of ", fmt_g(static_cast<double>(float_bytes) / 1e6, 3), " MB"));
    }
    trainable_ = make_trainable(a_, net, a_.model.model_name_or_path, dtype_, dev_);
    net.train();
    lm_weight_ = net.lm_head ? net.lm_head->weight : net.model->embed_tokens->weight;  // (V, H)
    const int64_t n_train = trainable_->num_parameters();
    log::info(kComp, log::cat("finetuning_type ", a_.finetuning.finetuning_type, ": trainable params: ", n_train,
                              " || all params: ", plan_.total_params, " || trainable%: ",
                              fmt_g(100.0 * static_cast<double>(n_train) / static_cast<double>(std::max<int64_t>(1, plan_.total_params)), 4)));

    // Activation checkpointing per decoder layer (train/checkpointing.h): each layer's trained
    // tensors are inputs of its checkpoint node; the generator state is replayed when dropout
    // draws masks.
    train_fo_.output_hidden_states = true;  // the last entry is after model.norm
    train_fo_.last_logits_only = true;      // the full (B, T, V) logits are never built
    if (plan_.gradient_checkpointing) {
        train_fo_.layer_wrapper = checkpoint_every_layer(trainable_->layer_parameters(), trainable_->uses_rng());
        log::info(kComp, "gradient checkpointing: on (each decoder layer recomputed in backward; disable_gradient_checkpointing: true keeps activations)");
    }
    optim_ = std::make_unique<AdamW>(trainable_->parameters(),
                                     AdamWOptions{ta_.learning_rate, ta_.adam_beta1, ta_.adam_beta2, ta_.adam_epsilon, ta_.weight_decay});

    state_.max_steps = max_steps_;
    state_.num_train_epochs = ta_.max_steps > 0 ? std::ceil(static_cast<double>(max_steps_) / static_cast<double>(steps_per_epoch_))
                                                : ta_.num_train_epochs;
    state_.logging_steps = ta_.logging_steps;
    state_.save_steps = ta_.save_steps;
    state_.eval_steps = ta_.eval_steps.value_or(ta_.logging_steps);
    state_.train_batch_size = ta_.per_device_train_batch_size;
}

// ---- resume: decide, check, restore ---------------------------------------------------------
void SftRecipe::resume() {
    if (ta_.resume_from_checkpoint && !ta_.resume_from_checkpoint->empty()) {
        resume_dir_ = *ta_.resume_from_checkpoint;
        if (!fs::exists(fs::path(resume_dir_) / "pdsd_resume.json")) {
            throw ConfigError(ErrorInfo{resume_dir_}.at("resume_from_checkpoint").msg("is not a pdsd checkpoint folder")
                                  .expected("a checkpoint-N folder holding pdsd_resume.json"));
        }
    } else if (!ta_.overwrite_output_dir) {
        auto cks = checkpoints_in(out_dir_);
        if (!cks.empty()) {
            resume_dir_ = cks.back();
            log::info(kComp, "found " + resume_dir_ + ": resuming from it (set overwrite_output_dir to start over)");
        } else if (trainable_->output_exists(out_dir_)) {
            throw ConfigError(ErrorInfo{out_dir_}.at("output_dir").msg("already holds a trained " + trainable_->output_kind() + " and no checkpoint")
                                  .hint("use another output_dir, or set overwrite_output_dir: true"));
        }
    }
    if (dp_) dp_->barrier();  // every rank has chosen its checkpoint before rank 0 deletes any
    if (ta_.overwrite_output_dir && fs::exists(out_dir_) && is_main_) {
        for (const auto& ck : checkpoints_in(out_dir_)) fs::remove_all(ck);
        fs::remove(fs::path(out_dir_) / "trainer_log.jsonl");
    }
    if (is_main_) fs::create_directories(out_dir_);
    log_file_ = std::make_unique<TrainerLogFile>((fs::path(out_dir_) / "trainer_log.jsonl").string());

    model_hash_ = model_fingerprint(a_.model.model_name_or_path);
    hparams_ = method_hparams(a_);
    if (world_ > 1) hparams_["world_size"] = world_;  // the global batch; absent for one process (older checkpoints stay valid)
    hparams_hash_ = sha256_hex(hparams_.dump());
    if (resume_dir_.empty()) {
        if (is_main_) fs::remove(log_file_->path());
        return;
    }
    resume_info_ = read_json_file((fs::path(resume_dir_) / "pdsd_resume.json").string());
    auto refuse = [&](const std::string& what, const std::string& hint) {
        throw ConfigError(ErrorInfo{resume_dir_}.at("resume").msg(what + " differs from the checkpoint's").hint(hint));
    };
    if (resume_info_.value("data_sha256", "") != data_hash_) {
        refuse("the tokenized training data", "the dataset, template, cutoff_len or tokenizer changed; use a new output_dir");
    }
    if (resume_info_.value("model_sha256", "") != model_hash_) refuse("the base model", "model_name_or_path points at other weights");
    if (resume_info_.value("hparams_sha256", "") != hparams_hash_) {
        std::string diff;
        const json old = resume_info_.value("hparams", json::object());
        for (auto it = hparams_.begin(); it != hparams_.end(); ++it) {
            if (!old.contains(it.key()) || old[it.key()] != it.value()) {
                diff += " " + it.key() + ": " + (old.contains(it.key()) ? old[it.key()].dump() : "?") + " -> " + it.value().dump() + ";";
            }
        }
        refuse("a hyper-parameter", "changed:" + diff + " restore them or use a new output_dir");
    }

    trainable_->load(resume_dir_);
    const auto& params = trainable_->parameters();
    const auto& pnames = trainable_->parameter_names();
    SafetensorsFile of((fs::path(resume_dir_) / "optimizer.safetensors").string());
    const int64_t step_count = resume_info_.value("optimizer_step", int64_t{0});
    for (size_t i = 0; i < params.size(); ++i) {
        const TensorInfo* m1 = of.find(pnames[i] + ".exp_avg");
        const TensorInfo* m2 = of.find(pnames[i] + ".exp_avg_sq");
        if (!m1 || !m2) throw FormatError(ErrorInfo{of.path()}.at(pnames[i]).msg("AdamW state missing"));
        auto view = [&](const TensorInfo* ti) { return at::from_blob(const_cast<uint8_t*>(of.data(*ti)), ti->shape, at::kFloat); };
        optim_->load_state(i, view(m1), view(m2), step_count);
    }
    state_ = TrainerState::load((fs::path(resume_dir_) / "trainer_state.json").string());
    state_.max_steps = max_steps_;
    start_step_ = state_.global_step;
    run_loss_sum_ = resume_info_.value("loss_sum", 0.0);  // absent in checkpoints of pdsd < 0.2: resumed steps only
    run_logged_ = resume_info_.value("loss_steps", int64_t{0});
    std::string rng_hex = resume_info_.value(rng_key(dev_), std::string());
    if (rank_ > 0) {  // each rank's dropout draws differ: its own state
        const fs::path f = fs::path(resume_dir_) / ("rng_state_" + std::to_string(rank_) + ".hex");
        rng_hex = fs::exists(f) ? read_file(f.string()) : std::string();
    }
    auto bytes = unhex(rng_hex);
    if (!bytes.empty()) {
        at::Tensor rs = at::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, at::kByte).clone();
        at::Generator gen = dropout_generator(dev_);  // a handle to the global generator
        gen.set_state(rs);
    }
    if (is_main_) log_file_->truncate_after(start_step_);
    const int64_t epoch_i = start_step_ / std::max<int64_t>(1, steps_per_epoch_);
    log::info(kComp, log::cat("resumed from ", resume_dir_, ": step ", start_step_, "/", max_steps_, ", next lr ",
                              fmt_g(sched_.lr(start_step_), 6), ", data position epoch ", epoch_i, " micro-batch ",
                              lay_.micro_range(start_step_ - epoch_i * steps_per_epoch_).first, " of ", lay_.micro_per_epoch(),
                              ", ", state_.num_input_tokens_seen, " tokens seen"));
}

// ---- evaluate: mean token CE over the eval set (sharded over ranks) ---------------------------
double SftRecipe::evaluate() {
    at::NoGradGuard ng;
    auto& net = *lm_.model;
    net.eval();
    double sum = 0;
    int64_t n = 0;
    const int64_t ebs = ta_.per_device_eval_batch_size;
    for (int64_t s = 0, bi = 0; s < static_cast<int64_t>(eval_set_.size()); s += ebs, ++bi) {
        if (bi % world_ != rank_) continue;  // eval batches are sharded like training micro-batches
        std::vector<int64_t> idx;
        for (int64_t i = s; i < std::min<int64_t>(s + ebs, static_cast<int64_t>(eval_set_.size())); ++i) idx.push_back(i);
        Batch b = collate(eval_set_, idx, pad_id_, dev_);
        model::ForwardOptions fo;
        fo.output_hidden_states = true;
        fo.last_logits_only = true;
        auto out = net.forward(b.input_ids, b.attention_mask, {}, nullptr, fo);
        LossSum ls = causal_lm_loss_sum(out.hidden_states.back(), lm_weight_, b.labels, opt_.ce_chunk_tokens);
        sum += ls.sum.item<double>();
        n += ls.n_tokens;
    }
    net.train();
    if (dp_) {
        at::Tensor t = at::tensor({sum, static_cast<double>(n)}, at::kDouble);
        dp_->all_reduce_sum(t);
        sum = t[0].item<double>();
        n = static_cast<int64_t>(std::llround(t[1].item<double>()));
    }
    return n > 0 ? sum / static_cast<double>(n) : 0.0;
}

// ---- save: checkpoint-N (trained part, AdamW state, trainer state, resume record) ------------
void SftRecipe::save_checkpoint(int64_t step) {
    const fs::path final_dir = fs::path(out_dir_) / ("checkpoint-" + std::to_string(step));
    const fs::path tmp = fs::path(out_dir_) / (".checkpoint-" + std::to_string(step) + ".tmp");
    if (is_main_) {
        fs::remove_all(tmp);
        fs::create_directories(tmp);
    }
    if (dp_) {  // ranks > 0 add their generator state (dropout), then rank 0 completes the folder
        dp_->barrier();
        if (!is_main_) {
            at::Tensor rs = dropout_generator(dev_).get_state();
            write_file_atomic((tmp / ("rng_state_" + std::to_string(rank_) + ".hex")).string(),
                              hex(rs.data_ptr<uint8_t>(), static_cast<size_t>(rs.numel())));
        }
        dp_->barrier();
        if (!is_main_) {
            dp_->barrier();  // rank 0 has renamed the folder
            return;
        }
    }
    trainable_->save(tmp.string());
    // AdamW state: "<name>.exp_avg" / ".exp_avg_sq" fp32 (the step count is in pdsd_resume.json).
    const auto& params = trainable_->parameters();
    const auto& pnames = trainable_->parameter_names();
    std::vector<at::Tensor> keep;
    std::vector<TensorView> views;
    keep.reserve(params.size() * 2);
    const int64_t opt_step = params.empty() ? 0 : optim_->steps(params.size() - 1);  // one read of a device counter
    for (size_t i = 0; i < params.size(); ++i) {
        for (auto [suffix, t] : {std::pair<const char*, at::Tensor>{".exp_avg", optim_->exp_avg(i)}, {".exp_avg_sq", optim_->exp_avg_sq(i)}}) {
            keep.emplace_back();
            at::Tensor cpu = t.detach().to(at::kCPU, at::kFloat).contiguous();
            views.push_back(model::tensor_view(pnames[i] + suffix, cpu, keep.back()));
            if (!keep.back().defined()) keep.back() = cpu;
        }
    }
    write_safetensors((tmp / "optimizer.safetensors").string(), views, {{"format", "pt"}, {"optimizer", "torch.optim.AdamW"}});
    keep.clear();
    state_.save((tmp / "trainer_state.json").string());
    at::Tensor rng = dropout_generator(dev_).get_state();
    json info = {{"global_step", step},
                 {"optimizer_step", opt_step},
                 {"finetuning_type", a_.finetuning.finetuning_type},
                 {"scheduler", {{"type", schedule_kind_name(sched_.kind)}, {"last_epoch", step}, {"base_lr", sched_.base_lr},
                                {"warmup_steps", sched_.warmup_steps}, {"total_steps", sched_.total_steps}, {"next_lr", sched_.lr(step)}}},
                 {"data_position", {{"epoch", step / steps_per_epoch_}, {"step_in_epoch", step % steps_per_epoch_},
                                    {"shuffle", "mt19937_64(seed * 1000003 + epoch)"}}},
                 {rng_key(dev_), hex(rng.data_ptr<uint8_t>(), static_cast<size_t>(rng.numel()))},
                 {"loss_sum", run_loss_sum_ + window_loss_},
                 {"loss_steps", run_logged_ + window_steps_},
                 {"data_sha256", data_hash_},
                 {"model_sha256", model_hash_},
                 {"hparams_sha256", hparams_hash_},
                 {"hparams", hparams_}};
    write_file_atomic((tmp / "pdsd_resume.json").string(), info.dump(2) + "\n");
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    log::info(kComp, "saved " + final_dir.string());
    if (dp_) dp_->barrier();
    if (ta_.save_total_limit && *ta_.save_total_limit > 0) {
        auto cks = checkpoints_in(out_dir_);
        while (static_cast<int64_t>(cks.size()) > *ta_.save_total_limit) {
            fs::remove_all(cks.front());
            cks.erase(cks.begin());
        }
    }
}

// ---- train: one optimizer step ----------------------------------------------------------------
std::pair<double, double> SftRecipe::train_step(int64_t step, bool& interrupted) {
    const int64_t epoch_i = step / steps_per_epoch_, j = step % steps_per_epoch_;
    if (epoch_i != order_epoch_) {
        order_ = epoch_order(lay_.n, ta_.seed, epoch_i);
        order_epoch_ = epoch_i;
    }
    const std::vector<int64_t>& order = order_;
    auto [m0, m1] = lay_.micro_range(j);
    std::vector<std::vector<int64_t>> micro;
    int64_t total_targets = 0, local_targets = 0;
    for (int64_t m = m0; m < m1; ++m) {
        const bool mine = (m - m0) % world_ == rank_;  // data parallel: micro-batch k of the step -> rank k % world
        std::vector<int64_t> idx;
        for (int64_t i = m * lay_.bs; i < std::min(lay_.n, (m + 1) * lay_.bs); ++i) {
            idx.push_back(order[i]);
            total_targets += train_set_[order[i]].targets;  // over every rank's micro-batches
            if (mine) local_targets += train_set_[order[i]].targets;
        }
        if (mine) micro.push_back(std::move(idx));
    }
    // Loss of the step = sum of token CEs over all its micro-batches (of all ranks) / their
    // target count; the ranks' gradients are then summed.
    auto& net = *lm_.model;
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dev_));  // on the device: one sync a step
    int64_t step_tokens = 0;
    for (const auto& idx : micro) {
        Batch b = collate(train_set_, idx, pad_id_, dev_);
        auto out = net.forward(b.input_ids, b.attention_mask, {}, nullptr, train_fo_);
        LossSum ls = causal_lm_loss_sum(out.hidden_states.back(), lm_weight_, b.labels, opt_.ce_chunk_tokens);
        at::Tensor loss = ls.sum / static_cast<double>(std::max<int64_t>(1, total_targets));
        loss.backward();
        loss_sum += loss.detach();
        step_tokens += b.tokens;
    }
    trainable_->gradients_to_master();
    const auto& params = trainable_->parameters();
    double step_loss = loss_sum.item<double>();
    interrupted = interrupt_requested();
    if (dp_) {
        // One all-reduce per step: [every trained gradient (zeros when this rank had no
        // micro-batch), loss, target tokens, input tokens, interrupt flag].
        std::vector<at::Tensor> parts;
        for (auto& p : params) parts.push_back((p.grad().defined() ? p.grad() : at::zeros_like(p)).reshape(-1).to(at::kDouble));
        parts.push_back(at::tensor({step_loss, static_cast<double>(local_targets), static_cast<double>(step_tokens),
                                    interrupted ? 1.0 : 0.0}, at::TensorOptions().dtype(at::kDouble).device(dev_)));
        at::Tensor flat = at::cat(parts);
        dp_->all_reduce_sum(flat);
        int64_t off = 0;
        for (auto p : params) {
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
    state_.num_input_tokens_seen += step_tokens;  // all ranks (HF gathers it across processes)
    tokens_here_ += step_tokens;
    const double grad_norm = clip_grad_norm(params, ta_.max_grad_norm);  // max_grad_norm <= 0: the norm only
    optim_->set_lr(sched_.lr(step));  // LambdaLR: update step+1 runs at factor(step)
    optim_->step();
    optim_->zero_grad();
    trainable_->master_to_model();
    state_.global_step = step + 1;
    state_.epoch = static_cast<double>(epoch_i) + static_cast<double>(m1) / static_cast<double>(lay_.micro_per_epoch());
    return {step_loss, grad_norm};
}

// ---- train: the loop (logs, evals, checkpoints, Ctrl-C) ----------------------------------------
void SftRecipe::train() {
    StatusLine status(opt_.progress_bar && is_main_);
    const auto t_loop = std::chrono::steady_clock::now();
    result_.resumed_from = start_step_;
    result_.max_steps = max_steps_;
    result_.trainable_params = trainable_->num_parameters();
    result_.rank = rank_;

    for (int64_t step = start_step_; step < max_steps_; ++step) {
        bool interrupted = false;
        const auto [step_loss, grad_norm] = train_step(step, interrupted);
        window_loss_ += step_loss;
        ++window_steps_;
        const int64_t gs = state_.global_step;
        const bool epoch_end = (step % steps_per_epoch_) + 1 == steps_per_epoch_;

        auto emit = [&](const json& rec) {
            state_.log_history.push_back(rec);
            if (!is_main_) return;
            log_file_->append(trainer_log_line(rec, gs, max_steps_, seconds_since(t_loop), gs - start_step_,
                                               state_.num_input_tokens_seen, tokens_here_));
        };
        if (ta_.logging_steps > 0 && (gs % ta_.logging_steps == 0 || gs == max_steps_)) {
            const double loss_avg = round_to(window_loss_ / static_cast<double>(window_steps_), 4);
            json rec = {{"epoch", state_.epoch},
                        {"grad_norm", grad_norm},
                        {"learning_rate", sched_.lr(gs)},  // HF logs the rate of the next update
                        {"loss", loss_avg},
                        {"num_input_tokens_seen", state_.num_input_tokens_seen},
                        {"step", gs}};
            emit(rec);
            run_loss_sum_ += window_loss_;
            run_logged_ += window_steps_;
            window_loss_ = 0;
            window_steps_ = 0;
            const double el = seconds_since(t_loop);
            const double tps = el > 0 ? static_cast<double>(tokens_here_) / el : 0;
            const double eta = (gs - start_step_) > 0 ? el / static_cast<double>(gs - start_step_) * static_cast<double>(max_steps_ - gs) : 0;
            const std::string text = log::cat("step ", gs, "/", max_steps_, " loss ", fmt_g(loss_avg, 6), " lr ", fmt_g(sched_.lr(gs), 4),
                                              " grad_norm ", fmt_g(grad_norm, 4), " epoch ", fmt_g(state_.epoch, 4), " ",
                                              static_cast<int64_t>(tps), " tok/s ETA ", format_timedelta(eta));
            if (status.tty()) status.show(text);
            else log::info(kComp, text);
        }
        const bool do_eval = !eval_set_.empty() &&
                             ((ta_.eval_strategy == "steps" && state_.eval_steps > 0 && gs % state_.eval_steps == 0) ||
                              (ta_.eval_strategy == "epoch" && epoch_end));
        if (do_eval) {
            const auto t_eval = std::chrono::steady_clock::now();
            const double el = evaluate();
            const double rt = seconds_since(t_eval);
            json rec = {{"epoch", state_.epoch},
                        {"eval_loss", el},
                        {"eval_runtime", round_to(rt, 4)},
                        {"eval_samples_per_second", round_to(rt > 0 ? static_cast<double>(eval_set_.size()) / rt : 0, 3)},
                        {"eval_steps_per_second", round_to(rt > 0 ? std::ceil(static_cast<double>(eval_set_.size()) / static_cast<double>(ta_.per_device_eval_batch_size)) / rt : 0, 3)},
                        {"step", gs}};
            emit(rec);
            status.done();
            log::info(kComp, log::cat("step ", gs, " eval_loss ", fmt_g(el, 6)));
        }
        if ((ta_.save_steps > 0 && gs % ta_.save_steps == 0) || interrupted) {  // HF: the last step too when it is a multiple
            status.done();
            save_checkpoint(gs);
        }
        if (interrupted) {
            log::warn(kComp, log::cat("interrupted: checkpoint-", gs, " saved; run the same command again to resume"));
            throw Interrupted();
        }
    }
    status.done();
}

// ---- finish: final eval, output, results, plots ---------------------------------------------
TrainResult SftRecipe::finish() {
    if (window_steps_ > 0) {
        run_loss_sum_ += window_loss_;
        run_logged_ += window_steps_;
    }
    const double runtime = seconds_since(t_start_);
    result_.global_step = state_.global_step;
    result_.train_loss = run_logged_ > 0 ? run_loss_sum_ / static_cast<double>(run_logged_) : 0.0;
    const double n_samples = static_cast<double>(lay_.n) * state_.num_train_epochs;
    json end_rec = {{"epoch", state_.epoch},
                    {"step", state_.global_step},
                    {"total_flos", 0.0},
                    {"train_loss", result_.train_loss},
                    {"train_runtime", round_to(runtime, 4)},
                    {"train_samples_per_second", round_to(runtime > 0 ? n_samples / runtime : 0, 3)},
                    {"train_steps_per_second", round_to(runtime > 0 ? static_cast<double>(max_steps_ - start_step_) / runtime : 0, 3)}};
    state_.log_history.push_back(end_rec);
    const bool final_eval = !eval_set_.empty() && ta_.eval_strategy != "no";
    const double final_eval_loss = final_eval ? evaluate() : 0.0;  // collective: every rank
    if (is_main_) {
        trainable_->save(out_dir_);
        state_.save((fs::path(out_dir_) / "trainer_state.json").string());
        json train_results = end_rec;
        train_results.erase("step");
        write_file_atomic((fs::path(out_dir_) / "train_results.json").string(), train_results.dump(4) + "\n");
        json all_results = train_results;
        if (final_eval) {
            json er = {{"epoch", state_.epoch}, {"eval_loss", final_eval_loss}};
            write_file_atomic((fs::path(out_dir_) / "eval_results.json").string(), er.dump(4) + "\n");
            all_results["eval_loss"] = final_eval_loss;
        }
        write_file_atomic((fs::path(out_dir_) / "all_results.json").string(), all_results.dump(4) + "\n");
        if (a_.finetuning.plot_loss) plot_losses(out_dir_);
    }
    if (dp_) dp_->barrier();  // no rank exits (closing the store) before rank 0 has written
    if (dev_.is_cuda()) {  // the measured peak, to set against the --dry-run estimate
        const auto stats = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(dev_.index());
        const double peak = static_cast<double>(stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak);
        log::info(kComp, log::cat("peak CUDA memory allocated: ", fmt_g(peak / (1024.0 * 1024.0 * 1024.0), 4), " GiB (estimate ",
                                  fmt_g(plan_.peak_memory_gib, 4), " GiB)"));
    }
    log::info(kComp, log::cat("done: ", state_.global_step, " steps, train_loss ", fmt_g(result_.train_loss, 6), ", ",
                              trainable_->output_kind(), " in ", out_dir_));
    return result_;
}

}  // namespace

TrainResult run_sft(const TrainOptions& opt) {
    SftRecipe r(opt);
    r.setup_environment();
    r.setup_data();
    r.make_plan();
    if (opt.dry_run) return r.dry_run();
    r.setup_model();
    r.resume();
    r.train();
    return r.finish();
}

}  // namespace pdsd::train
