// pdsd export: merging the PEFT fixtures must reproduce PEFT's merge_and_unload output,
// with HF's sharded layout, an honest manifest, and no half-written folder on failure.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/export/merge.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/model/weights.h"
#include "test_util.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <filesystem>

namespace fs = std::filesystem;
using namespace pdsd;
using nlohmann::json;

namespace {

exporter::ExportOptions tiny_options(const std::string& out) {
    exporter::ExportOptions o;
    o.model_name_or_path = test::golden("tiny-qwen2");
    o.adapter_name_or_path = {test::golden("tiny-qwen2-lora-step1")};
    o.template_name = "qwen";
    o.export_dir = out;
    return o;
}

// Entries of `dir` other than `keep` (temp/old folders must not linger).
std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

// PEFT merged in fp32 (base loaded from BF16) and saved BF16; pdsd merges in fp32 with the
// same operation order ((B @ A) * scale, then W + delta) and rounds once, so every tensor
// is bit-for-bit identical: asserted exactly (0 ulp), not within a tolerance.
TEST(Export, MergeOfStep1AdapterEqualsPeftMergeAndUnloadBitForBit) {
    test::TempDir dir;
    auto rep = exporter::run_export(tiny_options(dir.file("merged")));
    EXPECT_EQ(rep.tensors_merged, 4);
    EXPECT_EQ(rep.tensors_changed, 4);
    EXPECT_EQ(rep.output_dtype, "bfloat16");
    Checkpoint ours = Checkpoint::open(dir.file("merged"));
    Checkpoint peft = Checkpoint::open(test::golden("tiny-qwen2-merged"));
    ASSERT_EQ(ours.names(), peft.names());
    for (const auto& n : peft.names()) {
        const TensorInfo& a = ours.info(n);
        const TensorInfo& b = peft.info(n);
        EXPECT_EQ(a.dtype, b.dtype) << n;
        EXPECT_EQ(a.shape, b.shape) << n;
        ASSERT_EQ(a.nbytes(), b.nbytes()) << n;
        EXPECT_EQ(0, std::memcmp(ours.data(n), peft.data(n), a.nbytes())) << n;
    }
    ASSERT_TRUE(rep.verify.has_value());
    EXPECT_TRUE(rep.verify->ok);
    EXPECT_EQ(rep.verify->tensors_checked, 4);
    EXPECT_EQ(rep.verify->tensors_identical, static_cast<int64_t>(peft.names().size()) - 4);
    // Logits through pdsd's Qwen2: the folder as written vs the base config holding its tensors.
    EXPECT_TRUE(rep.verify->logits_checked);
    EXPECT_LE(rep.verify->logits_max_abs_diff, rep.verify->logits_tolerance);
    EXPECT_EQ(entries(dir.str()), std::vector<std::string>{"merged"});  // no temp folder left
}

TEST(Export, SmallExportSizeShardsWithIndexConfigAndManifest) {
    test::TempDir dir;
    auto o = tiny_options(dir.file("out"));
    o.max_shard_bytes = 100000;  // export_size 0.0001 GB
    auto rep = exporter::run_export(o);
    json index = read_json_file(dir.file("out/model.safetensors.index.json"));
    Checkpoint peft = Checkpoint::open(test::golden("tiny-qwen2-merged"));
    uint64_t total = 0;
    for (const auto& n : peft.names()) total += peft.info(n).nbytes();
    EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
    EXPECT_EQ(index["weight_map"].size(), peft.names().size());
    std::set<std::string> shards;
    for (const auto& [k, v] : index["weight_map"].items()) shards.insert(v.get<std::string>());
    ASSERT_GE(shards.size(), 3u);
    for (const auto& s : shards) {
        EXPECT_NE(s.find("-of-0000" + std::to_string(shards.size()) + ".safetensors"), std::string::npos) << s;
        SafetensorsFile f(dir.file("out/" + s));
        uint64_t bytes = 0;
        for (const auto& t : f.tensors()) bytes += t.nbytes();
        EXPECT_TRUE(bytes <= 100000 || f.tensors().size() == 1) << s << " " << bytes;
    }
    // Same tensors as the unsharded PEFT merge.
    Checkpoint ours = Checkpoint::open(dir.file("out"));
    for (const auto& n : peft.names()) {
        EXPECT_EQ(0, std::memcmp(ours.data(n), peft.data(n), peft.info(n).nbytes())) << n;
    }
    // config.json: the base's, dtype stated; generation config and Modelfile copied/written.
    json cfg = read_json_file(dir.file("out/config.json"));
    json base_cfg = read_json_file(test::golden("tiny-qwen2/config.json"));
    EXPECT_EQ(cfg, base_cfg);  // base is already bfloat16
    EXPECT_EQ(read_file(dir.file("out/generation_config.json")), read_file(test::golden("tiny-qwen2/generation_config.json")));
    EXPECT_EQ(read_file(dir.file("out/Modelfile")), exporter::ollama_modelfile("qwen", std::nullopt));
    // Manifest: every other file, with its size and sha256.
    json mf = read_json_file(dir.file("out/pdsd_manifest.json"));
    std::set<std::string> listed;
    for (const auto& f : mf["files"]) {
        std::string p = f["path"].get<std::string>();
        listed.insert(p);
        EXPECT_EQ(f["bytes"].get<uint64_t>(), fs::file_size(dir.file("out/" + p))) << p;
        EXPECT_EQ(f["sha256"].get<std::string>(), sha256_file(dir.file("out/" + p))) << p;
    }
    std::set<std::string> on_disk;
    for (const auto& e : entries(dir.file("out"))) {
        if (e != "pdsd_manifest.json") on_disk.insert(e);
    }
    EXPECT_EQ(listed, on_disk);
    EXPECT_EQ(rep.files.size(), on_disk.size() + 1);
}

TEST(Export, ExportDtypeFp32WritesFloat32AndUpdatesConfig) {
    test::TempDir dir;
    auto o = tiny_options(dir.file("f32"));
    o.export_dtype = "fp32";
    auto rep = exporter::run_export(o);
    EXPECT_EQ(rep.output_dtype, "float32");
    EXPECT_EQ(read_json_file(dir.file("f32/config.json"))["torch_dtype"], "float32");
    Checkpoint ours = Checkpoint::open(dir.file("f32"));
    Checkpoint base = Checkpoint::open(test::golden("tiny-qwen2"));
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-step1"));
    for (const auto& n : ours.names()) {
        ASSERT_EQ(ours.info(n).dtype, DType::F32) << n;
        at::Tensor want = model::checkpoint_tensor(base, n).to(at::kFloat);
        if (const auto* m = a.find(n.substr(0, n.size() - 7))) want = want.add(m->delta());
        EXPECT_TRUE(at::equal(model::checkpoint_tensor(ours, n), want)) << n;  // no rounding at all
    }
    ASSERT_TRUE(rep.verify.has_value());
    EXPECT_LT(rep.verify->max_abs_diff, 1e-4);
    EXPECT_TRUE(rep.verify->logits_checked);
    EXPECT_LE(rep.verify->logits_max_abs_diff, rep.verify->logits_tolerance);  // fp32: 1e-4 x scale
}

TEST(Export, AdaptersApplyInOrderAndAccumulateInFloat32) {
    test::TempDir dir;
    auto o = tiny_options(dir.file("two"));
    o.adapter_name_or_path.push_back(test::golden("tiny-qwen2-lora-init"));
    exporter::run_export(o);
    Checkpoint ours = Checkpoint::open(dir.file("two"));
    Checkpoint base = Checkpoint::open(test::golden("tiny-qwen2"));
    lora::Adapter s = lora::load_adapter(test::golden("tiny-qwen2-lora-step1"));
    lora::Adapter i = lora::load_adapter(test::golden("tiny-qwen2-lora-init"));
    for (const auto& m : s.modules) {
        at::Tensor want = model::checkpoint_tensor(base, m.base_weight()).to(at::kFloat);
        want.add_(m.delta()).add_(i.find(m.name)->delta());
        EXPECT_TRUE(at::equal(model::checkpoint_tensor(ours, m.base_weight()), want.to(at::kBFloat16))) << m.name;
    }
}

TEST(Export, ZeroAdapterChangesNothingAndIsReported) {
    test::TempDir dir;
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-init"));
    for (auto& m : a.modules) m.B = at::zeros_like(m.B);
    lora::save_adapter(dir.file("zero"), a);
    auto o = tiny_options(dir.file("out"));
    o.adapter_name_or_path = {dir.file("zero")};
    auto rep = exporter::run_export(o);
    EXPECT_EQ(rep.tensors_merged, 4);
    EXPECT_EQ(rep.tensors_changed, 0);
    Checkpoint ours = Checkpoint::open(dir.file("out"));
    Checkpoint base = Checkpoint::open(test::golden("tiny-qwen2"));
    for (const auto& n : base.names()) {
        EXPECT_EQ(0, std::memcmp(ours.data(n), base.data(n), base.info(n).nbytes())) << n;
    }
}

TEST(Export, BadAdapterLeavesNoFolderBehind) {
    test::TempDir dir;
    // An adapter for a wider model: its q_proj does not fit the base's [64, 64] weight.
    lora::Adapter a = lora::load_adapter(test::golden("tiny-qwen2-lora-step1"));
    a.modules[0].B = at::zeros({128, 8});
    lora::save_adapter(dir.file("wide"), a);
    auto o = tiny_options(dir.file("out"));
    o.adapter_name_or_path = {dir.file("wide")};
    EXPECT_THROW(exporter::run_export(o), ShapeError);
    EXPECT_EQ(entries(dir.str()), std::vector<std::string>{"wide"});
}

TEST(Export, InterruptMidwayLeavesNoFolderAndKeepsPreviousExport) {
    test::TempDir dir;
    auto o = tiny_options(dir.file("out"));
    o.max_shard_bytes = 100000;
    exporter::run_export(o);  // a previous, complete export
    std::string manifest = read_file(dir.file("out/pdsd_manifest.json"));
    // Second run: interrupted while the shards are being written (the temp folder exists).
    o.export_dtype = "fp32";
    request_interrupt();
    EXPECT_THROW(exporter::run_export(o), Interrupted);
    clear_interrupt();
    EXPECT_EQ(entries(dir.str()), std::vector<std::string>{"out"});
    EXPECT_EQ(read_file(dir.file("out/pdsd_manifest.json")), manifest);
    // A fresh target that fails midway never appears.
    auto o2 = tiny_options(dir.file("fresh"));
    request_interrupt();
    EXPECT_THROW(exporter::run_export(o2), Interrupted);
    clear_interrupt();
    EXPECT_FALSE(fs::exists(dir.file("fresh")));
    // Re-running over a previous pdsd export replaces it.
    exporter::run_export(o);
    EXPECT_EQ(read_json_file(dir.file("out/config.json"))["torch_dtype"], "float32");
    EXPECT_EQ(entries(dir.str()), std::vector<std::string>{"out"});
}

TEST(Export, RefusesForeignNonEmptyExportDir) {
    test::TempDir dir;
    fs::create_directories(dir.file("mine"));
    write_file_atomic(dir.file("mine/notes.txt"), "keep me");
    EXPECT_THROW(exporter::run_export(tiny_options(dir.file("mine"))), UsageError);
    EXPECT_EQ(read_file(dir.file("mine/notes.txt")), "keep me");
}

TEST(Export, LlamaFactoryArgsMapToOptions) {
    LfArgs a;
    ConfigSchema s = lf_schema(a, "export");
    s.load_yaml_text("model_name_or_path: base\nadapter_name_or_path: a1,a2\ntemplate: qwen\n"
                     "finetuning_type: lora\nexport_dir: out\nexport_size: 2\nexport_legacy_format: false\n",
                     "merge.yaml");
    s.apply_overrides({"--export_size", "0.5", "--export_dtype", "fp16"});
    auto o = exporter::options_from_lf(a);
    EXPECT_EQ(o.model_name_or_path, "base");
    EXPECT_EQ(o.adapter_name_or_path, (std::vector<std::string>{"a1", "a2"}));
    EXPECT_EQ(o.max_shard_bytes, 500000000u);  // HF: "0.5GB" = 0.5 x 10^9 bytes
    EXPECT_EQ(o.export_dtype, "fp16");
    a.export_.export_legacy_format = true;
    EXPECT_THROW(exporter::options_from_lf(a), UsageError);
    a.export_.export_legacy_format = false;
    a.finetuning.finetuning_type = "full";
    EXPECT_THROW(exporter::options_from_lf(a), UsageError);
    a.finetuning.finetuning_type = "lora";
    a.model.quantization_bit = 4;   // the QLoRA training yaml reused: merge onto the float base
    EXPECT_THROW(exporter::options_from_lf(a), UsageError);
    a.model.quantization_bit = 8;
    EXPECT_THROW(exporter::options_from_lf(a), UsageError);
    a.model.quantization_bit.reset();
    a.export_.export_dir.clear();
    EXPECT_THROW(exporter::options_from_lf(a), UsageError);
}

TEST(Export, OllamaModelfileMatchesLlamaFactoryQwenTemplate) {
    // LLaMA-Factory get_ollama_modelfile() for template "qwen" (header line names pdsd).
    EXPECT_EQ(exporter::ollama_modelfile("qwen", std::nullopt),
              "# ollama modelfile auto-generated by pdsd\n\n"
              "FROM .\n\n"
              "TEMPLATE \"\"\"{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
              "{{ range .Messages }}{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
              "<|im_start|>assistant\n{{ else if eq .Role \"assistant\" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}\"\"\"\n\n"
              "SYSTEM \"\"\"You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\"\"\"\n\n"
              "PARAMETER stop \"<|im_end|>\"\n"
              "PARAMETER num_ctx 4096\n");
    EXPECT_NE(exporter::ollama_modelfile("qwen", std::string("Be brief.")).find("SYSTEM \"\"\"Be brief.\"\"\""),
              std::string::npos);
    EXPECT_THROW(exporter::ollama_modelfile("llama3", std::nullopt), UsageError);
}
