// The export self-check on both sides: it never rejects a merge equal to round(W + s B A)
// (all-linear adapters, large and small weights, bf16/fp16/fp32, tied and untied embeddings),
// and it rejects planted faults (misplaced delta, transposed B A, alpha/sqrt(r) instead of
// alpha/r, a dropped layer) in a written folder.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/export/merge.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/model/tools.h"
#include "pdsd/model/weights.h"
#include "test_util.h"

#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

namespace fs = std::filesystem;
using namespace pdsd;

namespace {

const std::vector<std::string> kLinears = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                           "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// A random base of tiny-qwen2's shape, stored in `dtype`, with tied or untied embeddings.
std::string make_base(const test::TempDir& dir, const std::string& dtype, bool tied) {
    nlohmann::json cfg = read_json_file(test::golden("tiny-qwen2") + "/config.json");
    cfg["tie_word_embeddings"] = tied;
    const std::string cfg_path = dir.file("config-" + dtype + (tied ? "-tied" : "-untied") + ".json");
    write_file_atomic(cfg_path, cfg.dump(2));
    model::InitOptions o;
    o.config_file = cfg_path;
    o.out_dir = dir.file("base-" + dtype + (tied ? "-tied" : "-untied"));
    o.dtype = dtype;
    o.seed = 7;
    model::init_random_checkpoint(o);
    return o.out_dir;
}

// LLaMA-Factory's `lora_target: all` on every layer: A ~ N(0, a_std), B ~ N(0, b_std).
std::string make_all_linear_adapter(const test::TempDir& dir, const std::string& base, const std::string& name, double a_std,
                                    double b_std, bool rslora) {
    Checkpoint ck = Checkpoint::open(base);
    lora::Adapter ad;
    ad.config.r = 8;
    ad.config.lora_alpha = 16;
    ad.config.use_rslora = rslora;
    ad.config.base_model_name_or_path = base;
    at::manual_seed(11);
    for (int layer = 0; layer < 2; ++layer) {
        for (const auto& lin : kLinears) {
            const std::string mod = "model.layers." + std::to_string(layer) + "." + lin;
            const auto& shape = ck.info(mod + ".weight").shape;  // [out, in]
            lora::LoraModule m;
            m.name = mod;
            m.A = at::randn({8, shape[1]}).mul_(a_std);
            m.B = at::randn({shape[0], 8}).mul_(b_std);
            m.scale = ad.config.scale_for(mod);
            ad.modules.push_back(m);
        }
    }
    std::sort(ad.modules.begin(), ad.modules.end(), [](const auto& x, const auto& y) { return x.name < y.name; });
    const std::string out = dir.file(name);
    lora::save_adapter(out, ad);
    return out;
}

exporter::ExportOptions options(const std::string& base, const std::string& adapter, const std::string& out) {
    exporter::ExportOptions o;
    o.model_name_or_path = base;
    o.adapter_name_or_path = {adapter};
    o.template_name = "qwen";
    o.export_dir = out;
    return o;
}

// Both halves of the self-check on an existing folder, as run_export runs them.
void self_check(const exporter::ExportOptions& o, const std::string& dir) { exporter::self_check_export(o, dir); }

// Rewrites `dir`/model.safetensors with `edit` applied to its tensors (fp32 copies, cast back).
void plant(const std::string& dir, const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
    const std::string file = dir + "/model.safetensors";
    std::map<std::string, at::Tensor> tensors;
    std::map<std::string, c10::ScalarType> types;
    {
        Checkpoint ck = Checkpoint::open(dir);
        for (const auto& n : ck.names()) {
            at::Tensor t = model::checkpoint_tensor(ck, n);
            types[n] = t.scalar_type();
            tensors[n] = t.to(at::kFloat, false, true);
        }
    }
    edit(tensors);
    std::vector<at::Tensor> keep(tensors.size());
    std::vector<at::Tensor> cast;
    std::vector<TensorView> views;
    size_t i = 0;
    for (auto& [n, t] : tensors) {
        cast.push_back(t.to(types[n]).contiguous());
        views.push_back(model::tensor_view(n, cast.back(), keep[i++]));
    }
    write_safetensors(file, views);
}

// scale * B A of `module` as stored in the adapter folder, fp32.
at::Tensor delta_of(const std::string& adapter, const std::string& module, double scale_override = 0, bool transpose = false) {
    lora::Adapter a = lora::load_adapter(adapter);
    const lora::LoraModule* m = a.find(module);
    EXPECT_NE(m, nullptr) << module;
    at::Tensor d = at::matmul(m->B, m->A).mul_(scale_override > 0 ? scale_override : m->scale);
    return transpose ? d.t().contiguous() : d;
}

}  // namespace

TEST(ExportSelfCheck, PassesOnCorrectAllLinearMergesAcrossDtypesSizesAndTying) {
    test::TempDir dir;
    struct Case {
        std::string dtype;
        bool tied;
        double a_std, b_std;
        bool rslora;
    };
    // Large weights reproduce the reported false alarm (bf16 rounding of seven merged
    // linears per layer moves the logits far past the old fp32-reference tolerance).
    const std::vector<Case> cases = {{"bf16", true, 0.5, 0.5, false},  {"bf16", false, 0.5, 0.5, true}, {"bf16", true, 1e-3, 1e-3, false},
                                     {"fp16", false, 0.3, 0.3, false}, {"fp16", true, 1e-3, 1e-2, true}, {"fp32", false, 0.5, 0.5, false},
                                     {"fp32", true, 1e-3, 1e-3, false}};
    int k = 0;
    for (const auto& c : cases) {
        SCOPED_TRACE(c.dtype + (c.tied ? " tied" : " untied") + " b_std " + std::to_string(c.b_std));
        const std::string base = make_base(dir, c.dtype, c.tied);
        const std::string ad = make_all_linear_adapter(dir, base, "ad" + std::to_string(k), c.a_std, c.b_std, c.rslora);
        const std::string out = dir.file("out" + std::to_string(k++));
        exporter::ExportReport rep;
        ASSERT_NO_THROW(rep = exporter::run_export(options(base, ad, out)));
        ASSERT_TRUE(rep.verify.has_value());
        EXPECT_TRUE(rep.verify->ok);
        EXPECT_EQ(rep.tensors_merged, 14);
        EXPECT_TRUE(rep.verify->logits_checked);
        EXPECT_LE(rep.verify->logits_max_abs_diff, rep.verify->logits_tolerance);
    }
}

TEST(ExportSelfCheck, RejectsPlantedFaults) {
    test::TempDir dir;
    const std::string base = make_base(dir, "bf16", true);
    const std::string ad = make_all_linear_adapter(dir, base, "ad", 0.5, 0.5, false);
    const std::string good = dir.file("good");
    exporter::run_export(options(base, ad, good));
    ASSERT_NO_THROW(self_check(options(base, ad, good), good));

    const std::string q0 = "model.layers.0.self_attn.q_proj", o0 = "model.layers.0.self_attn.o_proj";
    Checkpoint bck = Checkpoint::open(base);
    auto base_w = [&](const std::string& m) { return model::checkpoint_tensor(bck, m + ".weight").to(at::kFloat, false, true); };
    const double scale = 16.0 / 8.0, rs_scale = 16.0 / std::sqrt(8.0);
    struct Fault {
        std::string name;
        std::function<void(std::map<std::string, at::Tensor>&)> edit;
    };
    const std::vector<Fault> faults = {
        {"q_proj's delta merged into o_proj",
         [&](auto& t) {
             t[q0 + ".weight"] = base_w(q0);
             t[o0 + ".weight"] = base_w(o0).add(delta_of(ad, q0));
         }},
        {"transposed B A", [&](auto& t) { t[q0 + ".weight"] = base_w(q0).add(delta_of(ad, q0, scale, true)); }},
        {"alpha/sqrt(r) instead of alpha/r", [&](auto& t) { t[q0 + ".weight"] = base_w(q0).add(delta_of(ad, q0, rs_scale)); }},
        {"layer 1 dropped",
         [&](auto& t) {
             for (const auto& lin : kLinears) t["model.layers.1." + lin + ".weight"] = base_w("model.layers.1." + lin);
         }},
    };
    int k = 0;
    for (const auto& f : faults) {
        SCOPED_TRACE(f.name);
        const std::string bad = dir.file("bad" + std::to_string(k++));
        fs::copy(good, bad, fs::copy_options::recursive);
        plant(bad, f.edit);
        try {
            self_check(options(base, ad, bad), bad);
            ADD_FAILURE() << "self-check accepted: " << f.name;
        } catch (const DataError& e) {
            EXPECT_NE(std::string(e.what()).find("self-check failed"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("hint"), std::string::npos) << e.what();
        }
    }
    // The weights are right but config.json describes another model: the logits half catches it.
    const std::string cfg_fault = dir.file("bad-config");
    fs::copy(good, cfg_fault, fs::copy_options::recursive);
    nlohmann::json cfg = read_json_file(cfg_fault + "/config.json");
    cfg["rope_theta"] = 10000.0;
    write_file_atomic(cfg_fault + "/config.json", cfg.dump(2));
    try {
        self_check(options(base, ad, cfg_fault), cfg_fault);
        ADD_FAILURE() << "self-check accepted a config.json with another rope_theta";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("does not load as the base model"), std::string::npos) << e.what();
    }
}
