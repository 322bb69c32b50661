#include "pdsd/model/tools.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"
#include "pdsd/model/decode_graph.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/quant.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include <dlfcn.h>

namespace fs = std::filesystem;

namespace pdsd::model {

Qwen2Config qwen2_preset(const std::string& name) {
    Qwen2Config c;  // defaults are Qwen2.5-0.5B's
    c.bos_token_id = 151643;
    c.eos_token_id = {151645};
    if (name == "qwen2.5-0.5b") return c;
    if (name == "qwen2.5-1.5b") {
        c.hidden_size = 1536, c.intermediate_size = 8960, c.num_hidden_layers = 28;
        c.num_attention_heads = 12, c.num_key_value_heads = 2;
        return c;
    }
    if (name == "qwen2.5-7b") {
        c.hidden_size = 3584, c.intermediate_size = 18944, c.num_hidden_layers = 28;
        c.num_attention_heads = 28, c.num_key_value_heads = 4, c.vocab_size = 152064;
        c.tie_word_embeddings = false;
        return c;
    }
    if (name == "tiny") {
        c.hidden_size = 64, c.intermediate_size = 176, c.num_hidden_layers = 2;
        c.num_attention_heads = 4, c.num_key_value_heads = 2;
        return c;
    }
    throw UsageError(ErrorInfo{}.at("--preset").expected("qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b or tiny").found("'" + name + "'"));
}

int64_t init_random_checkpoint(const InitOptions& o) {
    if (o.config_file.has_value() == o.preset.has_value()) {
        throw UsageError(ErrorInfo{}.msg("give exactly one of --config and --preset"));
    }
    Qwen2Config c = o.config_file ? load_qwen2_config(*o.config_file) : qwen2_preset(*o.preset);
    c.pdsd_random_weights = true;
    at::ScalarType dt = parse_dtype_name(o.dtype);
    c.torch_dtype = dt == at::kBFloat16 ? "bfloat16" : dt == at::kHalf ? "float16" : "float32";
    fs::create_directories(o.out_dir);

    // Parameter names and shapes from the module itself (meta device: no memory).
    at::NoGradGuard no_grad;
    Qwen2ForCausalLM shape_model(c, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
    at::Generator gen = at::detail::createCPUGenerator(o.seed);
    std::vector<at::Tensor> keep(shape_model->named_parameters().size());
    std::vector<TensorView> views;
    int64_t n_params = 0;
    size_t i = 0;
    for (const auto& p : shape_model->named_parameters()) {
        const std::string& name = p.key();
        at::Tensor t;
        if (name.find("norm.weight") != std::string::npos) t = at::ones(p.value().sizes(), at::kFloat);
        else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) t = at::zeros(p.value().sizes(), at::kFloat);
        else t = at::normal(0.0, 0.02, p.value().sizes(), gen, at::kFloat);
        n_params += t.numel();
        views.push_back(tensor_view(name, t.to(dt), keep[i++]));
    }
    write_sharded(o.out_dir, "model", views, 5000000000ULL);

    write_file_atomic((fs::path(o.out_dir) / "config.json").string(), to_json(c).dump(2) + "\n");
    int64_t bos = c.bos_token_id.value_or(0);
    nlohmann::json g = {{"bos_token_id", bos}, {"pad_token_id", bos}, {"do_sample", true},
                        {"repetition_penalty", 1.1}, {"temperature", 0.7}, {"top_p", 0.8}, {"top_k", 20}};
    std::vector<int64_t> eos = c.eos_token_id;
    if (std::find(eos.begin(), eos.end(), bos) == eos.end() && c.bos_token_id) eos.push_back(bos);
    g["eos_token_id"] = eos;
    write_file_atomic((fs::path(o.out_dir) / "generation_config.json").string(), g.dump(2) + "\n");

    if (o.tokenizer_dir) {
        int copied = 0;
        for (const char* f : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                              "special_tokens_map.json", "added_tokens.json"}) {
            fs::path src = fs::path(*o.tokenizer_dir) / f;
            if (!fs::exists(src)) continue;
            fs::path dst = fs::path(o.out_dir) / f;
            fs::copy_file(src, dst, fs::copy_options::overwrite_existing);
            fs::permissions(dst, fs::perms::owner_write, fs::perm_options::add);  // sources may be read-only
            ++copied;
        }
        if (copied == 0) {
            throw IoError(ErrorInfo{*o.tokenizer_dir}.msg("no tokenizer files")
                              .expected("tokenizer.json or vocab.json + merges.txt"));
        }
    }
    log::info("model", log::cat("wrote ", n_params, " random parameters to ", o.out_dir));
    return n_params;
}

std::string blas_sgemm_provider() {
    void* sym = ::dlsym(RTLD_DEFAULT, "sgemm_");
    Dl_info info{};
    if (!sym || !::dladdr(sym, &info) || !info.dli_fname) return "";
    return info.dli_fname;
}

nlohmann::json bench_generation(const BenchOptions& o) {
    const quant::Type qt = quant::parse_type(o.quant);
    Generator gen = Generator::load(o.model_dir, o.device, o.dtype, o.quant);  // quantized at load
    const LoadedModel& lm = gen.model();
    at::Generator rng = at::detail::createCPUGenerator(o.seed);
    int64_t vocab = std::min<int64_t>(lm.config.vocab_size, 151643);  // ordinary tokens
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t b = 0; b < o.batch; ++b) {
        at::Tensor t = at::randint(0, vocab, {o.prompt_len}, rng, at::TensorOptions().dtype(at::kLong));
        prompts.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + o.prompt_len);
    }
    GenerationOptions go;
    go.max_new_tokens = o.new_tokens;
    go.do_sample = false;
    go.repetition_penalty = 1.0;
    go.eos_token_id = std::vector<int64_t>{};
    go.cuda_graph = o.cuda_graph;
    go.reuse_prefix = false;  // the same prompt every run: reusing its keys would time a 1-token prefill
    double best_prefill = 1e30, best_decode = 1e30;
    for (int64_t run = 0; run <= o.runs; ++run) {  // run 0 warms up
        auto res = gen.generate_batch(prompts, go);
        if (run == 0) continue;
        best_prefill = std::min(best_prefill, res[0].prefill_seconds);
        best_decode = std::min(best_decode, res[0].decode_seconds);
    }
    int64_t decode_steps = std::max<int64_t>(0, o.new_tokens - 1);
    return {{"model", o.model_dir}, {"device", lm.device.str()}, {"dtype", c10::toString(lm.dtype)},
            {"threads", at::get_num_threads()}, {"blas", blas_sgemm_provider()}, {"quant", quant::type_name(qt)},
            {"quant_kernels", qt == quant::Type::none ? "" : quant::isa()}, {"quant_bytes", gen.model().quant_bytes},
            {"cuda_graph", o.cuda_graph && DecodeGraph::supported(lm.device)}, {"batch", o.batch}, {"prompt_len", o.prompt_len},
            {"new_tokens", o.new_tokens}, {"prefill_s", best_prefill}, {"decode_s", best_decode},
            {"prefill_tokens_per_s", static_cast<double>(o.batch * o.prompt_len) / best_prefill},
            {"decode_tokens_per_s", decode_steps ? static_cast<double>(o.batch * decode_steps) / best_decode : 0.0}};
}

}  // namespace pdsd::model
