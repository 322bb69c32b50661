#include "pdsd/model/loader.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/quant.h"
#include "pdsd/model/quant_cache.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <sstream>

#include <sys/mman.h>
#include <unistd.h>

namespace pdsd::model {

namespace {
std::string shape_str(at::IntArrayRef s) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    return os.str() + "]";
}
}  // namespace

c10::Device parse_device(const std::string& name) {
    if (name == "cpu") return c10::Device(c10::kCPU);
    if (name.rfind("cuda", 0) == 0) {
        int index = -1;
        if (name.size() > 4) {
            if (name[4] != ':' || name.size() == 5 || name.find_first_not_of("0123456789", 5) != std::string::npos) {
                throw UsageError(ErrorInfo{}.at("--device").expected("cpu, cuda or cuda:N").found("'" + name + "'"));
            }
            index = std::stoi(name.substr(5));
        }
        if (!torch::cuda::is_available()) {
            throw UsageError(ErrorInfo{}.at("--device").msg("CUDA is not available").found("'" + name + "'")
                                 .hint("use --device cpu, or check `pdsd env`"));
        }
        if (index >= static_cast<int>(torch::cuda::device_count())) {
            throw UsageError(ErrorInfo{}.at("--device").expected("a device index below " +
                                                                 std::to_string(torch::cuda::device_count()))
                                 .found("'" + name + "'"));
        }
        return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index < 0 ? 0 : index));
    }
    throw UsageError(ErrorInfo{}.at("--device").expected("cpu, cuda or cuda:N").found("'" + name + "'"));
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
    return false;
#endif
}

namespace {
// bf16 is the CPU default for bf16 checkpoints (Qwen2.5's own) on CPUs with native bf16
// (AVX512_BF16/AMX): the weights are mapped instead of copied and half the bytes move per
// decode step; `pdsd chat -q` took 0.9 s to the first token in bf16 against 2.3 s in fp32
// (docs/benchmarks.md). HF transformers 5 loads such checkpoints in bf16 by default too
// (dtype "auto"). Elsewhere, and for fp32 checkpoints, fp32.
constexpr bool kBf16CpuDefault = true;
}  // namespace

c10::ScalarType resolve_dtype(const std::string& dtype, const c10::Device& device,
                              std::optional<c10::ScalarType> stored) {
    if (!dtype.empty()) return parse_dtype_name(dtype);
    if (!device.is_cpu()) return c10::kBFloat16;
    return kBf16CpuDefault && stored == c10::kBFloat16 && cpu_has_native_bf16() ? c10::kBFloat16 : c10::kFloat;
}

namespace {
// The names/shapes check of load_weights; throws one ShapeError.
void check_names_and_shapes(Qwen2ForCausalLMImpl& model, const Checkpoint& ck) {
    auto params = model.named_parameters(/*recurse=*/true);
    std::set<std::string> expected;
    std::vector<std::string> missing, unexpected, misshaped;
    for (const auto& p : params) {
        expected.insert(p.key());
        if (!ck.contains(p.key())) {
            missing.push_back(p.key());
            continue;
        }
        const TensorInfo& info = ck.info(p.key());
        if (at::IntArrayRef(info.shape) != p.value().sizes()) {
            misshaped.push_back(p.key() + " (expected " + shape_str(p.value().sizes()) + ", found " +
                                shape_str(info.shape) + ")");
        }
    }
    for (const auto& name : ck.names()) {
        if (expected.count(name)) continue;
        if (name == "lm_head.weight" && model.config().tie_word_embeddings) continue;  // tied copy
        unexpected.push_back(name);
    }
    if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
        auto join = [](const std::vector<std::string>& v) {
            std::string s;
            for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
            return s;
        };
        std::string found;
        if (!missing.empty()) found += "missing: " + join(missing);
        if (!unexpected.empty()) found += std::string(found.empty() ? "" : "; ") + "unexpected: " + join(unexpected);
        if (!misshaped.empty()) found += std::string(found.empty() ? "" : "; ") + "wrong shape: " + join(misshaped);
        throw ShapeError(ErrorInfo{ck.source()}
                             .msg("checkpoint does not match config.json")
                             .expected("the " + std::to_string(expected.size()) + " tensors of Qwen2ForCausalLM")
                             .found(found)
                             .hint("is config.json the one this checkpoint was saved with?"));
    }
}
}  // namespace

size_t load_weights(Qwen2ForCausalLMImpl& model, const std::shared_ptr<Checkpoint>& ck, bool map_weights,
                    const std::function<bool(const std::string&)>& as_stored) {
    check_names_and_shapes(model, *ck);
    at::NoGradGuard no_grad;
    size_t mapped = 0;
    bool writable = false;
    uintptr_t lo = UINTPTR_MAX, hi = 0;  // byte range of the mapped tensors, for the readahead hint
    for (auto& p : model.named_parameters(/*recurse=*/true)) {
        at::Tensor& param = p.value();
        const TensorInfo& info = ck->info(p.key());
        const uint8_t* bytes = ck->data(p.key());
        const auto elem = static_cast<uintptr_t>(dtype_size(info.dtype));
        const bool stored = as_stored && param.device().is_cpu() && as_stored(p.key());
        if ((map_weights || stored) && param.device().is_cpu() && (stored || param.scalar_type() == to_scalar_type(info.dtype)) &&
            reinterpret_cast<uintptr_t>(bytes) % elem == 0) {
            if (!writable) {  // once, before the first view: a stray in-place write must not fault
                ck->allow_private_writes();
                writable = true;
            }
            // The view's deleter holds the Checkpoint (and so the mapping) until the last
            // parameter viewing it is freed. The empty placeholder's memory is released here.
            at::Tensor view = at::from_blob(const_cast<uint8_t*>(bytes), info.shape, [ck](void*) {},
                                            param.options().dtype(to_scalar_type(info.dtype)));
            param.set_data(view);
            ++mapped;
            lo = std::min(lo, reinterpret_cast<uintptr_t>(bytes));
            hi = std::max(hi, reinterpret_cast<uintptr_t>(bytes) + info.nbytes());
        } else {
            param.copy_(checkpoint_tensor(*ck, p.key()));  // converts dtype and device in one copy
        }
    }
    if (mapped > 0) {
        // Nothing was read yet: on a cold page cache the first forward would fault the file in
        // 4 KiB at a time. Ask the kernel to start reading it now, asynchronously (a hint:
        // failure is harmless, and on a warm cache it costs a page-cache walk). Shards: the
        // range may span several mappings and the gaps between them; madvise then fails with
        // ENOMEM after advising the mapped parts, which is what we want.
        const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        lo &= ~(page - 1);
        ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
    }
    return mapped;
}

LoadedModel load_qwen2(const std::string& dir, const LoadOptions& options) {
    auto t0 = std::chrono::steady_clock::now();
    LoadedModel lm;
    lm.path = dir;
    lm.config = load_qwen2_config(dir);
    lm.generation = load_generation_config(dir);
    lm.device = parse_device(options.device);
    auto ck = std::make_shared<Checkpoint>(Checkpoint::open(dir));
    std::optional<c10::ScalarType> stored;
    if (ck->contains("model.embed_tokens.weight")) stored = to_scalar_type(ck->info("model.embed_tokens.weight").dtype);
    lm.dtype = resolve_dtype(options.dtype, lm.device, stored);
    at::NoGradGuard no_grad;
    // Parameters are created uninitialised (at::empty: address space only, no page is touched),
    // then each becomes a view of the mapping or receives one converting copy.
    lm.model = Qwen2ForCausalLM(lm.config, at::TensorOptions().dtype(lm.dtype).device(lm.device));
    const quant::Type qt = quant::parse_type(options.quant);
    size_t mapped = load_weights(*lm.model, ck, options.map_weights,
                                 qt == quant::Type::none ? std::function<bool(const std::string&)>() : quant::is_quantized_weight);
    lm.model->eval();
    // Drops the mapped float views; maps the quantized-weight cache when it matches (quant_cache.h).
    if (qt != quant::Type::none) lm.quant_bytes = quant::quantize_model_cached(lm, qt, *ck).bytes;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("model", log::cat("loaded ", dir, " (", lm.config.num_hidden_layers, " layers, hidden ",
                                lm.config.hidden_size, ") on ", lm.device.str(), " as ", c10::toString(lm.dtype),
                                " in ", s, " s", mapped ? log::cat(", ", mapped, " tensors mapped from the file without a copy") : std::string(),
                                lm.config.pdsd_random_weights ? " [random weights]" : ""));
    return lm;
}

}  // namespace pdsd::model
