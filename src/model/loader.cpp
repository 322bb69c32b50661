#include "pdsd/model/loader.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>
#include <set>
#include <sstream>

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

c10::ScalarType resolve_dtype(const std::string& dtype, const c10::Device& device) {
    if (dtype.empty()) return device.is_cpu() ? c10::kFloat : c10::kBFloat16;
    return parse_dtype_name(dtype);
}

void load_weights(Qwen2ForCausalLMImpl& model, const Checkpoint& ck) {
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
    at::NoGradGuard no_grad;
    for (auto& p : params) {
        p.value().copy_(checkpoint_tensor(ck, p.key()));  // converts dtype and device in one copy
    }
}

LoadedModel load_qwen2(const std::string& dir, const LoadOptions& options) {
    auto t0 = std::chrono::steady_clock::now();
    LoadedModel lm;
    lm.path = dir;
    lm.config = load_qwen2_config(dir);
    lm.generation = load_generation_config(dir);
    lm.device = parse_device(options.device);
    lm.dtype = resolve_dtype(options.dtype, lm.device);
    Checkpoint ck = Checkpoint::open(dir);
    at::NoGradGuard no_grad;
    lm.model = Qwen2ForCausalLM(lm.config, at::TensorOptions().dtype(lm.dtype).device(lm.device));
    load_weights(*lm.model, ck);
    lm.model->eval();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("model", log::cat("loaded ", dir, " (", lm.config.num_hidden_layers, " layers, hidden ",
                                lm.config.hidden_size, ") on ", lm.device.str(), " as ", c10::toString(lm.dtype),
                                " in ", s, " s", lm.config.pdsd_random_weights ? " [random weights]" : ""));
    return lm;
}

}  // namespace pdsd::model
