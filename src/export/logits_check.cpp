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

#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

namespace fs = std::filesystem;

namespace pdsd::exporter {

namespace {

// Unit roundoff of the written dtype (round to nearest moves a value by at most u |x|).
double unit_roundoff_of(c10::ScalarType t) {
    return t == c10::kBFloat16 ? std::ldexp(1.0, -8) : t == c10::kHalf ? std::ldexp(1.0, -11) : std::ldexp(1.0, -24);
}

struct Expected {
    at::Tensor sum;  // W + sum(scale B A), fp32, unrounded
    at::Tensor mag;  // sum |scale B A| per element, fp32
};

// What a correct merge writes, before rounding, for each adapted weight: W (fp32, from the
// base file) + sum over adapters of scale * B A, scale from adapter_config (alpha/r,
// alpha/sqrt(r) with use_rslora, alpha/rank patterns), the base key from the adapter's
// module name. Built from the adapter files, not from the merge's own bookkeeping.
std::map<std::string, Expected> expected_weights(const ExportOptions& o, const Checkpoint& base, const Checkpoint& out) {
    std::map<std::string, Expected> acc;
    for (const auto& path : o.adapter_name_or_path) {
        const lora::Adapter a = lora::load_adapter(path);
        for (const auto& m : a.modules) {
            const std::string key = m.name + ".weight";
            auto it = acc.find(key);
            if (it == acc.end()) {
                at::Tensor w = model::checkpoint_tensor(base, key).to(at::kFloat, false, true);
                it = acc.emplace(key, Expected{w, at::zeros_like(w)}).first;
            }
            at::Tensor d = at::matmul(m.B.to(at::kFloat), m.A.to(at::kFloat)).mul_(a.config.scale_for(m.name));
            if (a.config.fan_in_fan_out) d = d.t();
            it->second.sum.add_(d);
            it->second.mag.add_(d.abs());
        }
    }
    for (const auto& [key, e] : acc) {
        if (!out.contains(key)) {
            throw DataError(ErrorInfo{out.source()}.at("tensor '" + key + "'").msg("self-check failed: the adapted weight is missing")
                                .hint("the adapter's module names do not map onto this model; check base_model_name_or_path "
                                      "in adapter_config.json"));
        }
    }
    return acc;
}

// Every adapted weight as written vs W + sum(scale B A), element by element. Rounding the
// fp32 sum to nearest moves an element by <= u |S|; merging adapter by adapter in the output
// dtype (PEFT on a bf16 model, as LLaMA-Factory's export does) rounds each delta first, which
// adds <= u sum|d|. Allowed: 4u (|S| + sum|d|) + the dtype's smallest normal. Returns whether every
// weight equals round_to_nearest(S) bit for bit.
bool check_adapted_weights(const std::map<std::string, Expected>& expected, const Checkpoint& out, const std::string& dir) {
    bool identical = true;
    for (const auto& [key, e] : expected) {
        const auto t = model::to_scalar_type(out.info(key).dtype);
        const at::Tensor written = model::checkpoint_tensor(out, key).to(at::kFloat);
        if (written.sizes() != e.sum.sizes()) {
            throw DataError(ErrorInfo{dir}.at("tensor '" + key + "'").msg("self-check failed: shape differs from the base"));
        }
        const double u = unit_roundoff_of(t);
        const at::Tensor err = written.sub(e.sum).abs();
        // 4u: twice the worst case, so that an element at a rounding boundary, where another
        // summation order of B A may tip the rounding by one ulp, never fails a correct merge.
        // Plus the dtype's smallest normal: fp16 conversions may flush subnormals (|x| < 6.1e-5) to 0.
        const double tiny = t == c10::kHalf ? std::ldexp(1.0, -14) : std::numeric_limits<float>::min();
        const at::Tensor allowed = e.sum.abs().add(e.mag).mul_(4 * u).add_(tiny);
        const int64_t bad = err.gt(allowed).sum().item<int64_t>();
        if (bad > 0) {
            throw DataError(ErrorInfo{dir}.at("tensor '" + key + "'")
                                .msg("self-check failed: the merged weight is not base + scale * B A")
                                .expected("every element within the output dtype's rounding of W + scale * B A")
                                .found(log::cat(bad, " of ", e.sum.numel(), " elements off, max |diff| ", err.max().item<double>()))
                                .hint("the folder does not hold this base + adapter (wrong scale, transposed B A, or a dropped "
                                      "or misplaced module); pdsd export never publishes such a folder. Check that "
                                      "model_name_or_path / adapter_name_or_path are the ones it was made from"));
        }
        identical = identical && at::equal(e.sum.to(t).to(at::kFloat), written);
    }
    return identical;
}

// The base model as its own config.json describes it, holding the export's tensors.
at::Tensor base_network_logits(const std::string& base_dir, const Checkpoint& out, const at::Tensor& input) {
    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    model::LoadedModel lm = model::load_qwen2(base_dir, lo);
    auto params = lm.model->named_parameters(/*recurse=*/true);
    for (auto& item : params) {
        if (out.contains(item.key())) item.value().copy_(model::checkpoint_tensor(out, item.key()).to(at::kFloat));
    }
    return lm.model->forward(input).logits;
}

}  // namespace

// (1) adapted weights against the arithmetic (above); (2) the folder, loaded the way `pdsd
// chat` loads it, against the base model's own config holding the same tensors: a wrong
// config.json, shard index or embedding tying shows here. Neither compares with the unrounded
// fp32 network, so the legitimate effect of rounding the merge to bf16/fp16 cannot fail them.
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
    if (numel * 8 > o.verify_logits_max_bytes) {
        log::warn("export", log::cat("logits self-check skipped: two fp32 copies of the model need ", numel * 8 / 1000000,
                                     " MB (limit ", o.verify_logits_max_bytes / 1000000, " MB); the weight check ran"));
        return;
    }
    at::NoGradGuard no_grad;
    const Checkpoint out = Checkpoint::open(dir);
    const bool identical = check_adapted_weights(expected_weights(o, base, out), out, dir);

    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    model::LoadedModel lm = model::load_qwen2(dir, lo);
    // Probe sequences: 2 x 16 token ids spread over the vocabulary, deterministic.
    const int64_t vocab = lm.config.vocab_size, T = 16;
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < 2; ++b) {
        for (int64_t t = 0; t < T; ++t) ids.push_back((b * 104729 + t * 7919 + 13) % vocab);
    }
    const at::Tensor input = at::tensor(ids, at::kLong).reshape({2, T});
    const at::Tensor merged_logits = lm.model->forward(input).logits;
    const at::Tensor ref_logits = base_network_logits(o.model_name_or_path, out, input);

    const double scale = std::max(1.0, ref_logits.abs().max().item<double>());
    const double tol = 1e-4 * scale;  // same weights, same network: only summation order may differ
    r.logits_checked = true;
    r.logits_max_abs_diff = merged_logits.sub(ref_logits).abs().max().item<double>();
    r.logits_tolerance = tol;
    log::info("export", log::cat("logits self-check: max |logits(folder as written) - logits(base config, same tensors)| = ",
                                 r.logits_max_abs_diff, " over 2 x ", T, " probe tokens (tolerance ", tol, "); adapted weights ",
                                 identical ? "bit-identical to" : "within rounding of", " round(W + scale * B A)"));
    if (!(r.logits_max_abs_diff <= tol)) {
        r.ok = false;
        throw DataError(ErrorInfo{dir}.msg("self-check failed: the folder does not load as the base model with these weights")
                            .expected(log::cat("max |diff| <= ", tol)).found(log::cat(r.logits_max_abs_diff))
                            .hint("config.json, the shard index or the embedding tying differ from the base model's; "
                                  "pdsd export never publishes such a folder. Compare config.json with the base's"));
    }
}

}  // namespace pdsd::exporter
