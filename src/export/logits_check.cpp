// The logits half of the export self-check; kept apart from merge.cpp because it pulls in
// the libtorch module headers of the Qwen2 model.
#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/export/merge.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/qwen2.h"
#include "pdsd/model/weights.h"

#include <ATen/ops/tensor.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

namespace fs = std::filesystem;

namespace pdsd::exporter {

void check_merged_logits(const ExportOptions& o, const std::string& dir, const Checkpoint& base, VerifyReport& r) {
    fs::path cfg = fs::path(dir) / "config.json";
    if (!fs::exists(cfg)) return;
    auto j = read_json_file(cfg.string());
    if (j.value("model_type", std::string()) != "qwen2") {
        log::info("export", "logits self-check skipped: not a Qwen2 model (the weight check still ran)");
        return;
    }
    uint64_t numel = 0;
    for (const auto& n : base.names()) numel += base.info(n).numel();
    if (numel * 4 > o.verify_logits_max_bytes) {
        log::warn("export", log::cat("logits self-check skipped: an fp32 copy of the model needs ", numel * 4 / 1000000,
                                     " MB (limit ", o.verify_logits_max_bytes / 1000000, " MB); the weight check ran"));
        return;
    }
    at::NoGradGuard no_grad;
    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    model::LoadedModel lm = model::load_qwen2(dir, lo);
    c10::ScalarType out_t = c10::kFloat;
    {
        Checkpoint out = Checkpoint::open(dir);
        auto names = out.names();
        if (!names.empty()) out_t = model::to_scalar_type(out.info(names.front()).dtype);
    }

    // Probe sequences: 2 x 16 token ids spread over the vocabulary, deterministic.
    int64_t vocab = lm.config.vocab_size, T = 16;
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < 2; ++b) {
        for (int64_t t = 0; t < T; ++t) ids.push_back((b * 104729 + t * 7919 + 13) % vocab);
    }
    at::Tensor input = at::tensor(ids, at::kLong).reshape({2, T});
    at::Tensor merged_logits = lm.model->forward(input).logits;

    // Same network, adapted weights replaced by the unrounded fp32 W + sum(scale B A).
    std::map<std::string, at::Tensor> fp32_weights;
    std::vector<lora::Adapter> adapters;
    for (const auto& a : o.adapter_name_or_path) adapters.push_back(lora::load_adapter(a));
    for (const auto& a : adapters) {
        for (const auto& m : a.modules) {
            auto it = fp32_weights.find(m.base_weight());
            if (it == fp32_weights.end()) {
                it = fp32_weights.emplace(m.base_weight(), model::checkpoint_tensor(base, m.base_weight()).to(at::kFloat, false, true)).first;
            }
            it->second.add_(m.delta(a.config.fan_in_fan_out));
        }
    }
    auto params = lm.model->named_parameters(/*recurse=*/true);
    for (auto& [name, w] : fp32_weights) {
        at::Tensor* p = params.find(name);
        if (!p) throw InternalError("logits self-check: the model has no parameter '" + name + "'");
        p->copy_(w);
    }
    at::Tensor ref_logits = lm.model->forward(input).logits;

    double scale = std::max(1.0, ref_logits.abs().max().item<double>());
    double tol = out_t == c10::kFloat ? 1e-4 * scale
                                      : (out_t == c10::kHalf ? std::ldexp(1.0, -3) : 1.0) * 0.03 * scale;
    r.logits_checked = true;
    r.logits_max_abs_diff = merged_logits.sub(ref_logits).abs().max().item<double>();
    r.logits_tolerance = tol;
    log::info("export", log::cat("logits self-check: max |logits(merged, as written) - logits(base + adapters in fp32)| = ",
                                 r.logits_max_abs_diff, " over 2 x ", T, " probe tokens (tolerance ", tol, ")"));
    if (!(r.logits_max_abs_diff <= tol)) {
        r.ok = false;
        throw DataError(ErrorInfo{dir}.msg("self-check failed: the merged model's logits disagree with base + adapter")
                            .expected(log::cat("max |diff| <= ", tol)).found(log::cat(r.logits_max_abs_diff)));
    }
}

}  // namespace pdsd::exporter
