// YAML configs with LLaMA-Factory keys: typed values, unknown keys with did-you-mean,
// ignored keys, and command-line overrides.
#include "test_util.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/core/lf_args.h"

#include <nlohmann/json.hpp>

using namespace pdsd;

namespace {
std::string config_error(const std::function<void()>& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST(Config, SeedRecipeKeysLoadTyped) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    s.load_yaml_text(R"(
model_name_or_path: models/Qwen2.5-0.5B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_target: q_proj,v_proj
dataset: alpaca_zh_demo,identity
template: qwen
cutoff_len: 4096
learning_rate: 5.0e-6
lr_scheduler_type: cosine
warmup_steps: 100
weight_decay: 0.1
per_device_train_batch_size: 4
gradient_accumulation_steps: 4
num_train_epochs: 3.0
bf16: true
logging_steps: 1
save_steps: 1000
plot_loss: true
output_dir: saves/qwen
deepspeed: ds_z3.json
flash_attn: auto
)", "sft.yaml");
    EXPECT_EQ(a.model.model_name_or_path, "models/Qwen2.5-0.5B-Instruct");
    EXPECT_EQ(a.finetuning.lora_target, (std::vector<std::string>{"q_proj", "v_proj"}));
    EXPECT_EQ(a.data.dataset, (std::vector<std::string>{"alpaca_zh_demo", "identity"}));
    EXPECT_EQ(a.data.cutoff_len, 4096);
    EXPECT_DOUBLE_EQ(a.training.learning_rate, 5e-6);
    EXPECT_EQ(a.training.per_device_train_batch_size, 4);
    EXPECT_TRUE(a.training.bf16);
    EXPECT_TRUE(a.finetuning.plot_loss);
    EXPECT_EQ(a.finetuning.lora_alpha(), 16);  // default 2 x rank
    EXPECT_TRUE(s.was_set("deepspeed"));
}

TEST(Config, YamlListsAndNulls) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    s.load_yaml_text("lora_target: [q_proj, k_proj]\nmax_samples: null\nlora_alpha: 32\n", "x.yaml");
    EXPECT_EQ(a.finetuning.lora_target, (std::vector<std::string>{"q_proj", "k_proj"}));
    EXPECT_FALSE(a.data.max_samples.has_value());
    EXPECT_EQ(a.finetuning.lora_alpha(), 32);
}

TEST(Config, UnknownKeySuggestsClosest) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    std::string e = config_error([&] { s.load_yaml_text("learning_rat: 1e-4\n", "sft.yaml"); });
    EXPECT_NE(e.find("sft.yaml:1"), std::string::npos) << e;
    EXPECT_NE(e.find("unknown train key"), std::string::npos) << e;
    EXPECT_NE(e.find("did you mean 'learning_rate'"), std::string::npos) << e;
    // Nothing close: a pointer to the key list instead.
    e = config_error([&] { s.load_yaml_text("zzzzzzzzzz: 1\n", "sft.yaml"); });
    EXPECT_NE(e.find("--help-config"), std::string::npos) << e;
}

TEST(Config, WrongTypeNamesKeyAndValue) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    std::string e = config_error([&] { s.load_yaml_text("cutoff_len: long\n", "sft.yaml"); });
    EXPECT_NE(e.find("cutoff_len"), std::string::npos) << e;
    EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
    EXPECT_NE(e.find("'long'"), std::string::npos) << e;
    e = config_error([&] { s.load_yaml_text("bf16: maybe\n", "sft.yaml"); });
    EXPECT_NE(e.find("true or false"), std::string::npos) << e;
    e = config_error([&] { s.load_yaml_text("cutoff_len: [1, 2]\n", "sft.yaml"); });
    EXPECT_NE(e.find("a single value"), std::string::npos) << e;
}

TEST(Config, InvalidYamlGivesLine) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    std::string e = config_error([&] { s.load_yaml_text("a: 1\nb: [1, 2\n", "bad.yaml"); });
    EXPECT_NE(e.find("bad.yaml"), std::string::npos) << e;
    EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
}

TEST(Config, CommandLineOverrides) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    s.load_yaml_text("learning_rate: 5e-6\nbf16: false\n", "sft.yaml");
    s.apply_overrides({"--learning_rate", "1e-4", "--lora_rank=16", "--bf16", "cutoff_len=512", "--max_samples", "10"});
    EXPECT_DOUBLE_EQ(a.training.learning_rate, 1e-4);
    EXPECT_EQ(a.finetuning.lora_rank, 16);
    EXPECT_EQ(a.finetuning.lora_alpha(), 32);
    EXPECT_TRUE(a.training.bf16);
    EXPECT_EQ(a.data.cutoff_len, 512);
    EXPECT_EQ(a.data.max_samples.value(), 10);
    std::string e = config_error([&] { s.apply_overrides({"--lora_rnak", "4"}); });
    EXPECT_NE(e.find("did you mean 'lora_rank'"), std::string::npos) << e;
    e = config_error([&] { s.apply_overrides({"--cutoff_len"}); });
    EXPECT_NE(e.find("needs a value"), std::string::npos) << e;
}

TEST(Config, ResolvedJsonHasEveryBoundKey) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "train");
    auto j = s.to_json();
    EXPECT_EQ(j["cutoff_len"], 2048);
    EXPECT_EQ(j["lora_target"], nlohmann::json::array({"all"}));
    EXPECT_FALSE(j.contains("deepspeed"));  // ignored keys carry no value
}

TEST(Config, DidYouMean) {
    EXPECT_EQ(did_you_mean("formating", {"formatting", "file_name", "columns"}), "formatting");
    EXPECT_EQ(did_you_mean("format", {"formatting", "file_name", "columns"}), "");
    EXPECT_EQ(did_you_mean("Cutoff_Len", {"cutoff_len"}), "cutoff_len");
}
