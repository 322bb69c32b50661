// PEFT LoRA adapter folders: reading (fixtures written by PEFT 0.21), refusals, writing.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/model/weights.h"
#include "test_util.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <filesystem>
#include <functional>

namespace fs = std::filesystem;
using namespace pdsd;
using nlohmann::json;

namespace {

// A copy of a fixture adapter folder with its config edited by `edit`.
std::string copy_with_config(const test::TempDir& dir, const std::string& name, const std::string& fixture,
                             const std::function<void(json&)>& edit) {
    fs::path out = fs::path(dir.str()) / name;
    fs::create_directories(out);
    fs::copy_file(fs::path(test::golden(fixture)) / "adapter_model.safetensors", out / "adapter_model.safetensors");
    json cfg = read_json_file(test::golden(fixture) + "/adapter_config.json");
    edit(cfg);
    write_file_atomic((out / "adapter_config.json").string(), cfg.dump(2));
    return out.string();
}

template <typename E>
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected an exception";
    return "";
}

}  // namespace

TEST(LoraAdapter, ReadsStep1FixtureWithPeftNamesAndScale) {
    std::string dir = test::golden("tiny-qwen2-lora-step1");
    lora::Adapter a = lora::load_adapter(dir);
    EXPECT_EQ(a.config.r, 8);
    EXPECT_EQ(a.config.lora_alpha, 16);
    EXPECT_EQ(a.config.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
    ASSERT_EQ(a.modules.size(), 4u);
    EXPECT_EQ(a.modules[0].name, "model.layers.0.self_attn.q_proj");
    EXPECT_EQ(a.modules[1].name, "model.layers.0.self_attn.v_proj");
    EXPECT_EQ(a.modules[0].base_weight(), "model.layers.0.self_attn.q_proj.weight");
    Checkpoint ck = Checkpoint::open(dir);
    for (const auto& m : a.modules) {
        EXPECT_DOUBLE_EQ(m.scale, 2.0);  // alpha 16 / r 8
        EXPECT_EQ(m.A.size(0), 8);
        EXPECT_EQ(m.A.size(1), 64);
        EXPECT_EQ(m.B.size(0), m.name.find("q_proj") != std::string::npos ? 64 : 32);  // 2 kv heads x 16
        EXPECT_TRUE(at::equal(m.A, model::checkpoint_tensor(ck, lora::peft_tensor_name(m.name, 'A'))));
        EXPECT_TRUE(at::equal(m.B, model::checkpoint_tensor(ck, lora::peft_tensor_name(m.name, 'B'))));
    }
    EXPECT_FALSE(a.all_B_zero());
    EXPECT_NE(a.find("model.layers.1.self_attn.v_proj"), nullptr);
    EXPECT_EQ(a.find("model.layers.1.self_attn.k_proj"), nullptr);
}

TEST(LoraAdapter, ReadsInitFixture) {
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-init"));
    ASSERT_EQ(a.modules.size(), 4u);
    EXPECT_FALSE(a.all_B_zero());  // this fixture's B is N(0, 0.05), not PEFT's zeros
    lora::Adapter s = lora::load_adapter(test::golden("tiny-qwen2-lora-step1"));
    EXPECT_FALSE(at::equal(a.modules[0].A, s.modules[0].A));  // one optimizer step apart
}

TEST(LoraAdapter, ReadsNamesWithDefaultAdapterName) {
    test::TempDir dir;
    std::string src = test::golden("tiny-qwen2-lora-step1");
    fs::path out = fs::path(dir.str()) / "with-default";
    fs::create_directories(out);
    fs::copy_file(src + "/adapter_config.json", out / "adapter_config.json");
    SafetensorsFile f(src + "/adapter_model.safetensors");
    std::vector<TensorView> views;
    for (const auto& t : f.tensors()) {
        std::string n = t.name;
        n.replace(n.find(".weight"), 7, ".default.weight");  // PEFT's in-memory spelling
        views.push_back({n, t.dtype, t.shape, f.data(t), t.nbytes()});
    }
    write_safetensors((out / "adapter_model.safetensors").string(), views);
    lora::Adapter a = lora::load_adapter(out.string());
    lora::Adapter b = lora::load_adapter(src);
    ASSERT_EQ(a.modules.size(), b.modules.size());
    for (size_t i = 0; i < a.modules.size(); ++i) {
        EXPECT_EQ(a.modules[i].name, b.modules[i].name);
        EXPECT_TRUE(at::equal(a.modules[i].A, b.modules[i].A));
        EXPECT_TRUE(at::equal(a.modules[i].B, b.modules[i].B));
    }
}

TEST(LoraAdapter, RsloraScaleIsAlphaOverSqrtRank) {
    test::TempDir dir;
    auto path = copy_with_config(dir, "rs", "tiny-qwen2-lora-step1", [](json& c) { c["use_rslora"] = true; });
    lora::Adapter a = lora::load_adapter(path);
    for (const auto& m : a.modules) EXPECT_DOUBLE_EQ(m.scale, 16.0 / std::sqrt(8.0));
}

TEST(LoraAdapter, AlphaPatternOverridesPerModuleSuffix) {
    test::TempDir dir;
    auto path = copy_with_config(dir, "ap", "tiny-qwen2-lora-step1", [](json& c) {
        c["alpha_pattern"] = {{"q_proj", 32}, {"model.layers.1.self_attn.v_proj", 8}};
    });
    lora::Adapter a = lora::load_adapter(path);
    EXPECT_DOUBLE_EQ(a.find("model.layers.0.self_attn.q_proj")->scale, 4.0);
    EXPECT_DOUBLE_EQ(a.find("model.layers.0.self_attn.v_proj")->scale, 2.0);
    EXPECT_DOUBLE_EQ(a.find("model.layers.1.self_attn.v_proj")->scale, 1.0);
}

TEST(LoraAdapter, RankPatternMustMatchTensorRank) {
    test::TempDir dir;
    auto path = copy_with_config(dir, "rp", "tiny-qwen2-lora-step1", [](json& c) { c["rank_pattern"] = {{"q_proj", 4}}; });
    auto msg = error_of<ShapeError>([&] { lora::load_adapter(path); });
    EXPECT_NE(msg.find("rank 4"), std::string::npos) << msg;
}

TEST(LoraAdapter, RefusesModulesToSave) {
    test::TempDir dir;
    auto path = copy_with_config(dir, "mts", "tiny-qwen2-lora-step1", [](json& c) { c["modules_to_save"] = {"lm_head"}; });
    auto msg = error_of<ConfigError>([&] { lora::load_adapter(path); });
    EXPECT_NE(msg.find("modules_to_save"), std::string::npos) << msg;
    EXPECT_NE(msg.find("merge_and_unload"), std::string::npos) << msg;  // says what to do instead
}

TEST(LoraAdapter, RefusesDoraAndRegexTargets) {
    test::TempDir dir;
    auto dora = copy_with_config(dir, "dora", "tiny-qwen2-lora-step1", [](json& c) { c["use_dora"] = true; });
    EXPECT_NE(error_of<ConfigError>([&] { lora::load_adapter(dora); }).find("use_dora"), std::string::npos);
    auto rx = copy_with_config(dir, "rx", "tiny-qwen2-lora-step1",
                               [](json& c) { c["target_modules"] = ".*\\.(q_proj|v_proj)"; });
    auto msg = error_of<ConfigError>([&] { lora::load_adapter(rx); });
    EXPECT_NE(msg.find("regular expression"), std::string::npos) << msg;
}

TEST(LoraAdapter, MissingFolderAndFilesAreIoErrors) {
    test::TempDir dir;
    EXPECT_THROW(lora::load_adapter(dir.file("nope")), IoError);
    EXPECT_THROW(lora::load_adapter(dir.str()), IoError);  // no adapter_config.json
}

TEST(LoraAdapter, UnpairedTensorIsRejected) {
    test::TempDir dir;
    std::string src = test::golden("tiny-qwen2-lora-step1");
    fs::create_directories(dir.file("half"));
    fs::copy_file(src + "/adapter_config.json", dir.file("half/adapter_config.json"));
    SafetensorsFile f(src + "/adapter_model.safetensors");
    std::vector<TensorView> views;
    for (const auto& t : f.tensors()) {
        if (t.name.find("layers.1.self_attn.q_proj.lora_B") == std::string::npos) {
            views.push_back({t.name, t.dtype, t.shape, f.data(t), t.nbytes()});
        }
    }
    write_safetensors(dir.file("half/adapter_model.safetensors"), views);
    auto msg = error_of<FormatError>([&] { lora::load_adapter(dir.file("half")); });
    EXPECT_NE(msg.find("lora_A only"), std::string::npos) << msg;
}

TEST(LoraAdapter, WriterRoundTripReloadsIdentically) {
    test::TempDir dir;
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-step1"));
    lora::save_adapter(dir.file("out"), a);
    lora::Adapter b = lora::load_adapter(dir.file("out"));
    EXPECT_EQ(b.config.r, a.config.r);
    EXPECT_EQ(b.config.lora_alpha, a.config.lora_alpha);
    EXPECT_EQ(b.config.target_modules, a.config.target_modules);
    EXPECT_EQ(b.config.base_model_name_or_path, "tiny-qwen2");
    ASSERT_EQ(b.modules.size(), a.modules.size());
    for (size_t i = 0; i < a.modules.size(); ++i) {
        EXPECT_EQ(b.modules[i].name, a.modules[i].name);
        EXPECT_TRUE(at::equal(b.modules[i].A, a.modules[i].A));
        EXPECT_TRUE(at::equal(b.modules[i].B, a.modules[i].B));
        EXPECT_EQ(b.modules[i].scale, a.modules[i].scale);
    }
    // Same tensor names, dtypes and shapes as the file PEFT wrote; the same config keys.
    SafetensorsFile ours(dir.file("out/adapter_model.safetensors"));
    SafetensorsFile peft(test::golden("tiny-qwen2-lora-step1/adapter_model.safetensors"));
    ASSERT_EQ(ours.tensors().size(), peft.tensors().size());
    for (const auto& t : peft.tensors()) {
        const TensorInfo* o = ours.find(t.name);
        ASSERT_NE(o, nullptr) << t.name;
        EXPECT_EQ(o->dtype, t.dtype);
        EXPECT_EQ(o->shape, t.shape);
        EXPECT_EQ(0, std::memcmp(ours.data(*o), peft.data(t), t.nbytes())) << t.name;
    }
    EXPECT_EQ(ours.metadata().at("format"), "pt");
    json ours_cfg = read_json_file(dir.file("out/adapter_config.json"));
    json peft_cfg = read_json_file(test::golden("tiny-qwen2-lora-step1/adapter_config.json"));
    for (const auto& [k, v] : peft_cfg.items()) {
        if (k == "peft_version" || k.find("velora") != std::string::npos || k.find("monteclora") != std::string::npos ||
            k == "lora_ga_config" || k == "kasa_config" || k == "use_bdlora") {
            continue;  // version string; keys of PEFT features newer than the ones pdsd mirrors
        }
        ASSERT_TRUE(ours_cfg.contains(k)) << k;
        if (k != "target_modules") {
            EXPECT_EQ(ours_cfg[k], v) << k;
        }
    }
}

TEST(LoraAdapter, WriterDerivesTargetModulesAndKeepsZeroB) {
    test::TempDir dir;
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-init"));
    a.config.target_modules.clear();
    for (auto& m : a.modules) m.B = at::zeros_like(m.B);  // PEFT's default init: B = 0
    lora::save_adapter(dir.file("z"), a);
    lora::Adapter b = lora::load_adapter(dir.file("z"));
    EXPECT_EQ(b.config.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
    EXPECT_TRUE(b.all_B_zero());
    json cfg = read_json_file(dir.file("z/adapter_config.json"));
    EXPECT_EQ(cfg["peft_type"], "LORA");
    EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
    EXPECT_TRUE(cfg["modules_to_save"].is_null());
    EXPECT_EQ(cfg["bias"], "none");
    EXPECT_EQ(cfg["inference_mode"], true);
}
