// finetuning_type freeze and full, and LoRA on a 4-bit or 8-bit base (QLoRA), on a tiny random Qwen2 (CPU, in-process run_sft with
// configs/sft_tiny.yaml shortened): which tensors the saved HF model folder changed, bit for
// bit against the base checkpoint, the folder's files, and that it loads back.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/lf_args.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/tools.h"
#include "pdsd/model/weights.h"
#include "pdsd/train/trainer.h"
#include "test_util.h"

#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <set>

using namespace pdsd;
namespace fs = std::filesystem;

namespace {

std::string make_tiny(const test::TempDir& dir) {
    model::InitOptions io;
    io.preset = "tiny";
    io.out_dir = dir.file("tiny");
    io.tokenizer_dir = test::fixtures() + "/qwen-tokenizer";
    model::init_random_checkpoint(io);  // bf16 storage, as Qwen2.5 ships
    return io.out_dir;
}

// configs/sft_tiny.yaml, made short: 8 examples, 2 per step, cutoff 64, no eval, no plot.
train::TrainResult train_tiny(const std::string& base, const std::string& out, std::vector<std::string> overrides,
                              bool dry_run = false) {
    LfArgs args;
    ConfigSchema schema = lf_schema(args, "train");
    schema.load_yaml(test::source_dir() + "/configs/sft_tiny.yaml");
    std::vector<std::string> o = {"--model_name_or_path", base, "--output_dir", out, "--dataset_dir", test::source_dir() + "/data",
                                  "--max_samples", "6", "--val_size", "0", "--eval_strategy", "no", "--plot_loss", "false",
                                  "--cutoff_len", "64", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                                  "--save_steps", "1000", "--warmup_steps", "0", "--learning_rate", "1e-3"};
    o.insert(o.end(), overrides.begin(), overrides.end());
    schema.apply_overrides(o);
    train::TrainOptions opt;
    opt.args = args;
    opt.dry_run = dry_run;
    return train::run_sft(opt);
}

// Names of the tensors whose saved values differ from the base checkpoint's; every other
// tensor must be byte-identical (same dtype, same bytes).
std::set<std::string> changed_tensors(const std::string& base_dir, const std::string& out_dir) {
    Checkpoint base = Checkpoint::open(base_dir), out = Checkpoint::open(out_dir);
    std::set<std::string> changed;
    for (const auto& n : base.names()) {
        if (n == "lm_head.weight") continue;  // tied models: not saved
        EXPECT_TRUE(out.contains(n)) << n;
        if (!out.contains(n)) continue;
        const TensorInfo& bi = base.info(n);
        const TensorInfo& oi = out.info(n);
        EXPECT_EQ(bi.shape, oi.shape) << n;
        if (bi.dtype == oi.dtype && std::memcmp(base.data(n), out.data(n), bi.nbytes()) == 0) continue;
        at::Tensor a = model::checkpoint_tensor(base, n).to(at::kFloat), b = model::checkpoint_tensor(out, n).to(at::kFloat);
        if (at::equal(a, b)) {
            ADD_FAILURE() << n << ": same values but other bytes/dtype (" << dtype_name(bi.dtype) << " -> " << dtype_name(oi.dtype) << ")";
            continue;
        }
        changed.insert(n);
    }
    EXPECT_EQ(base.names().size() - (base.contains("lm_head.weight") ? 1 : 0), out.names().size());
    return changed;
}

std::set<std::string> names_where(const std::string& dir, const std::function<bool(const std::string&)>& pred) {
    std::set<std::string> s;
    for (const auto& n : Checkpoint::open(dir).names()) {
        if (n != "lm_head.weight" && pred(n)) s.insert(n);
    }
    return s;
}

void expect_hf_folder(const std::string& dir) {
    for (const char* f : {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
        EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << dir << " lacks " << f;
    }
    model::LoadOptions lo;
    lo.dtype = "fp32";
    auto lm = model::load_qwen2(dir, lo);  // loads back as pdsd chat loads it
    at::Tensor ids = at::tensor({151644, 872, 198, 108386}, at::kLong).unsqueeze(0);
    at::NoGradGuard ng;
    auto out = lm.model->forward(ids, at::ones_like(ids), {}, nullptr, {});
    EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
}

std::vector<double> logged_losses(const std::string& out) {
    std::vector<double> v;
    std::ifstream in(out + "/trainer_log.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        if (j.contains("loss")) v.push_back(j["loss"].get<double>());
    }
    return v;
}

}  // namespace

TEST(FinetuneFreeze, OnlyTheSelectedTensorsChange) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp), out = tmp.file("freeze");
    train::TrainResult r = train_tiny(base, out, {"--finetuning_type", "freeze", "--freeze_trainable_layers", "1",
                                                  "--freeze_trainable_modules", "mlp", "--freeze_extra_modules", "norm",
                                                  "--max_steps", "2", "--save_steps", "2"});
    EXPECT_EQ(r.global_step, 2);
    const std::set<std::string> want = names_where(base, [](const std::string& n) {
        return n.rfind("model.layers.1.mlp.", 0) == 0 || n == "model.norm.weight";
    });
    EXPECT_EQ(want.size(), 4u);  // gate/up/down + the final norm
    EXPECT_EQ(changed_tensors(base, out), want);
    EXPECT_EQ(r.trainable_params, 3 * 64 * 176 + 64);
    expect_hf_folder(out);
    // The checkpoint is a model folder too: the same trained tensors (fp32 master weights).
    EXPECT_EQ(changed_tensors(base, out + "/checkpoint-2"), want);
    EXPECT_TRUE(fs::exists(out + "/checkpoint-2/optimizer.safetensors"));
}

TEST(FinetuneFreeze, FirstLayersAllModulesAndEmbeddings) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp), out = tmp.file("freeze");
    train_tiny(base, out, {"--finetuning_type", "freeze", "--freeze_trainable_layers", "-1", "--freeze_trainable_modules", "all",
                           "--freeze_extra_modules", "embed_tokens", "--max_steps", "1"});
    const std::set<std::string> want = names_where(base, [](const std::string& n) {
        return n.rfind("model.layers.0.", 0) == 0 || n == "model.embed_tokens.weight";
    });
    EXPECT_EQ(changed_tensors(base, out), want);
}

TEST(FinetuneFreeze, BadKeysAreConfigErrorsNamingThem) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp);
    auto fails_with = [&](std::vector<std::string> o, const std::string& key) {
        try {
            o.insert(o.end(), {"--finetuning_type", "freeze", "--max_steps", "1"});
            train_tiny(base, tmp.file("bad"), o);
            ADD_FAILURE() << "accepted " << key;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
        }
    };
    fails_with({"--freeze_trainable_modules", "attention"}, "freeze_trainable_modules");
    fails_with({"--freeze_extra_modules", "lm_head"}, "freeze_extra_modules");  // tied: no lm_head
    fails_with({"--freeze_trainable_layers", "0"}, "freeze_trainable_layers");
    fails_with({"--adapter_name_or_path", base}, "adapter_name_or_path");
}

TEST(FinetuneFull, EveryTensorChangesAndLossFalls) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp), out = tmp.file("full");
    train::TrainResult r = train_tiny(base, out, {"--finetuning_type", "full", "--max_steps", "8", "--num_train_epochs", "10",
                                                  "--max_samples", "2", "--learning_rate", "3e-3"});
    EXPECT_EQ(r.global_step, 8);
    EXPECT_EQ(changed_tensors(base, out), names_where(base, [](const std::string&) { return true; }));
    EXPECT_EQ(r.trainable_params, 9816640);  // every parameter of the tiny preset
    const auto losses = logged_losses(out);
    ASSERT_EQ(losses.size(), 8u);
    EXPECT_LT(losses.back(), losses.front() - 0.5) << "full fine-tuning of 2 examples must fit them";
    expect_hf_folder(out);
    // The trained tensors are saved as the fp32 master weights (LF: cast_trainable_params_to_fp32).
    Checkpoint ck = Checkpoint::open(out);
    EXPECT_EQ(ck.info("model.layers.0.self_attn.q_proj.weight").dtype, DType::F32);
    EXPECT_EQ(read_json_file(out + "/config.json").value("torch_dtype", ""), "float32");
}

// QLoRA (LLaMA-Factory's quantization_bit: 4): the base's decoder projections are held in NF4
// (model/nf4.h, equal to bitsandbytes' format), only the adapter trains and is saved.
TEST(FinetuneQlora, TheAdapterTrainsOnAFourBitBaseAndLossFalls) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp), out = tmp.file("qlora"), plain = tmp.file("lora");
    const std::vector<std::string> common = {"--finetuning_type", "lora", "--max_steps", "8", "--num_train_epochs", "10",
                                             "--max_samples", "2", "--learning_rate", "5e-3", "--lora_target", "all"};
    std::vector<std::string> q = common;
    q.insert(q.end(), {"--quantization_bit", "4", "--quantization_type", "nf4", "--double_quantization", "true"});
    train::TrainResult r = train_tiny(base, out, q);
    train::TrainResult l = train_tiny(base, plain, common);
    EXPECT_EQ(r.global_step, 8);
    EXPECT_EQ(r.trainable_params, l.trainable_params);   // the same adapter shapes
    const auto ql = logged_losses(out), ll = logged_losses(plain);
    ASSERT_EQ(ql.size(), 8u);
    EXPECT_LT(ql.back(), ql.front() - 0.1) << "the adapter must fit 2 examples over a 4-bit base";
    // Step 1 runs the 4-bit base with a zero adapter: near the float model's loss, not equal.
    EXPECT_NEAR(ql.front(), ll.front(), 0.05);
    EXPECT_NE(ql.front(), ll.front());
    EXPECT_TRUE(fs::exists(out + "/adapter_model.safetensors"));
    EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));
    EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
}

TEST(FinetuneQlora, BadKeysAreConfigErrorsNamingThem) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp);
    auto fails_with = [&](std::vector<std::string> o, const std::string& word) {
        try {
            o.insert(o.end(), {"--max_steps", "1"});
            train_tiny(base, tmp.file("bad"), o);
            ADD_FAILURE() << "accepted " << word;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
        }
    };
    fails_with({"--finetuning_type", "lora", "--quantization_bit", "3"}, "4 | 8");
    fails_with({"--finetuning_type", "lora", "--quantization_bit", "0"}, "quantization_bit");
    fails_with({"--finetuning_type", "freeze", "--quantization_bit", "8"}, "only compatible with the LoRA method");
    fails_with({"--finetuning_type", "lora", "--quantization_bit", "8", "--quantization_method", "hqq"}, "quantization_method");
    fails_with({"--finetuning_type", "freeze", "--quantization_bit", "4"}, "only compatible with the LoRA method");
    fails_with({"--finetuning_type", "lora", "--quantization_bit", "4", "--quantization_type", "int4"}, "quantization_type");
    fails_with({"--finetuning_type", "lora", "--quantization_bit", "4", "--quantization_method", "hqq"}, "quantization_method");
}

namespace {

// --dry-run's table for a QLoRA run with `bits`: each method's trainable parameters and peak
// estimate on this batch; the run's own row is marked; full trains everything and needs the
// most, then freeze, LoRA, 8-bit QLoRA and 4-bit QLoRA.
void check_dry_run_table(const std::string& bits, const std::string& base_line) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp);
    testing::internal::CaptureStdout();
    train_tiny(base, tmp.file("dry"), {"--finetuning_type", "lora", "--quantization_bit", bits}, true);
    const std::string plan = testing::internal::GetCapturedStdout();
    EXPECT_NE(plan.find("finetuning_type: lora (QLoRA: base in " + base_line + ")"), std::string::npos) << plan;
    std::map<std::string, std::pair<int64_t, double>> rows;
    std::string marked;
    std::istringstream in(plan.substr(plan.find("peak memory estimate by method")));
    std::string line, method;
    std::getline(in, line);
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
        std::istringstream l(line);
        int64_t n = 0;
        double gib = 0;
        if (!(l >> method >> n >> gib)) break;
        rows[method] = {n, gib};
        if (line.find("<- this run") != std::string::npos) marked = method;
    }
    ASSERT_EQ(rows.size(), 5u) << plan;
    EXPECT_EQ(marked, "qlora-" + bits);
    EXPECT_EQ(rows["full"].first, 9816640);
    EXPECT_EQ(rows["lora"].first, rows["qlora-4"].first);
    EXPECT_EQ(rows["lora"].first, rows["qlora-8"].first);
    EXPECT_GT(rows["full"].second, rows["freeze"].second);
    EXPECT_GE(rows["freeze"].second, rows["lora"].second);
    EXPECT_GE(rows["lora"].second, rows["qlora-8"].second);
    EXPECT_GE(rows["qlora-8"].second, rows["qlora-4"].second);
    EXPECT_FALSE(fs::exists(tmp.file("dry")));  // a dry run writes nothing
}

}  // namespace

TEST(FinetuneQlora, DryRunTablesEveryMethodsMemory) { check_dry_run_table("4", "4-bit nf4, double quantization"); }

// 8-bit QLoRA (LLaMA-Factory's quantization_bit: 8): the decoder projections held as int8 rows
// (model/int8_rows.h, equal to bitsandbytes' Int8Params), only the adapter trains and is saved.
// quantization_type / double_quantization are 4-bit keys: ignored, the run is the same bit for bit.
TEST(FinetuneQlora8, TheAdapterTrainsOnAnEightBitBaseAndLossFalls) {
    test::TempDir tmp;
    const std::string base = make_tiny(tmp), out = tmp.file("q8");
    const std::vector<std::string> common = {"--finetuning_type", "lora", "--max_steps", "8", "--num_train_epochs", "10",
                                             "--max_samples", "2", "--learning_rate", "5e-3", "--lora_target", "all"};
    auto with = [&](std::vector<std::string> extra) {
        extra.insert(extra.begin(), common.begin(), common.end());
        return extra;
    };
    train::TrainResult r = train_tiny(base, out, with({"--quantization_bit", "8"}));
    train::TrainResult ig = train_tiny(base, tmp.file("q8_ignored"), with({"--quantization_bit", "8", "--quantization_type", "fp4",
                                                                            "--double_quantization", "false"}));
    train::TrainResult f = train_tiny(base, tmp.file("lora"), common);
    train::TrainResult q4 = train_tiny(base, tmp.file("q4"), with({"--quantization_bit", "4"}));
    EXPECT_EQ(r.global_step, 8);
    EXPECT_EQ(r.trainable_params, f.trainable_params);  // the same adapter shapes
    const auto l8 = logged_losses(out), lf = logged_losses(tmp.file("lora")), l4 = logged_losses(tmp.file("q4"));
    ASSERT_EQ(l8.size(), 8u);
    EXPECT_LT(l8.back(), l8.front() - 0.1) << "the adapter must fit 2 examples over an 8-bit base";
    // Step 1 runs the quantized base with a zero adapter: 8 bits stay nearer the float model than
    // 4 (the logged loss has 4 decimals: at 8 bits it may read equal), and the adapter trained
    // over it is another one than over the float base.
    EXPECT_LE(std::abs(l8.front() - lf.front()), std::abs(l4.front() - lf.front()));
    EXPECT_NEAR(l8.front(), lf.front(), 0.01);
    EXPECT_NE(read_file(tmp.file("lora") + "/adapter_model.safetensors"), read_file(out + "/adapter_model.safetensors"));
    EXPECT_EQ(logged_losses(tmp.file("q8_ignored")), l8);
    EXPECT_EQ(read_file(tmp.file("q8_ignored") + "/adapter_model.safetensors"), read_file(out + "/adapter_model.safetensors"));
    EXPECT_EQ(ig.global_step, 8);
    EXPECT_EQ(q4.global_step, 8);
    EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));
    EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
}

TEST(FinetuneQlora8, DryRunTablesEveryMethodsMemory) { check_dry_run_table("8", "8-bit int8 rows"); }
