#include "pdsd/export/merge.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/hf_folder.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/core/version.h"
#include "pdsd/export/gguf.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/model/weights.h"

#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/matmul.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <sys/mman.h>
#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace pdsd::exporter {

namespace {

bool is_float(DType d) { return d == DType::BF16 || d == DType::F16 || d == DType::F32 || d == DType::F64; }

// Unit roundoff of a storage dtype: |round(x) - x| <= u |x|.
double unit_roundoff(c10::ScalarType t) {
    switch (t) {
        case c10::kBFloat16: return std::ldexp(1.0, -8);
        case c10::kHalf: return std::ldexp(1.0, -11);
        case c10::kFloat: return std::ldexp(1.0, -24);
        default: return std::ldexp(1.0, -53);
    }
}

// The base folder: model_name_or_path may also name a .safetensors or index file.
fs::path base_folder(const std::string& p) {
    fs::path path(p);
    return fs::is_directory(path) ? path : path.parent_path();
}

// Every adapter, with each module checked against the base checkpoint.
std::vector<lora::Adapter> load_adapters(const ExportOptions& o, const Checkpoint& base) {
    std::vector<lora::Adapter> adapters;
    for (const auto& dir : o.adapter_name_or_path) {
        lora::Adapter a = lora::load_adapter(dir);
        for (const auto& m : a.modules) {
            std::string w = m.base_weight();
            if (!base.contains(w)) {
                throw ShapeError(ErrorInfo{dir}.at("module '" + m.name + "'")
                                     .msg("the base model has no weight for this adapter module")
                                     .expected("tensor '" + w + "' in " + base.source())
                                     .hint("is --model_name_or_path the model this adapter was trained on?"));
            }
            const TensorInfo& ti = base.info(w);
            int64_t out = m.B.size(0), in = m.A.size(1);
            std::vector<int64_t> want = a.config.fan_in_fan_out ? std::vector<int64_t>{in, out} : std::vector<int64_t>{out, in};
            if (ti.shape != want || !is_float(ti.dtype)) {
                auto shape = [](const std::vector<int64_t>& s) {
                    std::string r = "[";
                    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
                    return r + "]";
                };
                throw ShapeError(ErrorInfo{dir}.at("module '" + m.name + "'")
                                     .expected("base weight " + shape(want) + " (floating point)")
                                     .found(std::string(dtype_name(ti.dtype)) + " " + shape(ti.shape))
                                     .hint("the adapter was trained on a different base model"));
            }
        }
        if (a.all_B_zero()) {
            log::warn("export", log::cat(dir, ": every lora_B is zero, so this adapter changes nothing "
                                              "(a freshly initialised adapter?)"));
        }
        log::info("export", log::cat("adapter ", dir, ": ", a.modules.size(), " modules, r=", a.config.r,
                                     ", lora_alpha=", a.config.lora_alpha, a.config.use_rslora ? ", rslora" : ""));
        adapters.push_back(std::move(a));
    }
    return adapters;
}

// Drops the pages of a read-only file mapping range from this process (they stay in the
// page cache): streaming over a mapped checkpoint then keeps RSS near one tensor, not one
// model. Only whole pages inside [p, p + n) are dropped. Advisory: errors are ignored.
void drop_pages(const void* p, size_t n) {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
    uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

constexpr const char* kSelfCheckHint =
    "the folder does not hold base + adapter (a wrong module mapping or scale, or a dropped layer); pdsd export never "
    "publishes such a folder. Re-run pdsd export; if it repeats, report it with adapter_config.json";

void write_json_file(const fs::path& p, const json& j) { write_file_atomic(p.string(), j.dump(2) + "\n"); }

void check_target(const fs::path& final_dir) {
    if (!fs::exists(final_dir)) return;
    if (!fs::is_directory(final_dir)) {
        throw UsageError(ErrorInfo{final_dir.string()}.msg("export_dir exists and is not a folder"));
    }
    bool empty = fs::directory_iterator(final_dir) == fs::directory_iterator();
    if (!empty && !fs::exists(final_dir / "pdsd_manifest.json")) {
        throw UsageError(ErrorInfo{final_dir.string()}.msg("export_dir exists and holds files pdsd did not write")
                             .hint("choose a new export_dir or empty this one; an earlier pdsd export is replaced"));
    }
}

// The Modelfile with its `FROM .` line naming `from` instead (the GGUF beside it).
std::string modelfile_from(std::string modelfile, const std::string& from) {
    const std::string line = "FROM .\n";
    size_t at = modelfile.find(line);
    if (at != std::string::npos) modelfile.replace(at, line.size(), "FROM " + from + "\n");
    return modelfile;
}

}  // namespace

std::string ollama_modelfile(const std::string& template_name, const std::optional<std::string>& default_system) {
    // LLaMA-Factory data/template.py get_ollama_modelfile() for template "qwen"
    // (format_user / format_assistant / format_system slots; stop = {eos(<|im_end|> via
    // replace_eos), <|im_end|>}), with its header line naming pdsd.
    if (template_name != "qwen") {
        throw UsageError(ErrorInfo{}.at("template '" + template_name + "'")
                             .msg("no Ollama Modelfile template known").expected("qwen"));
    }
    std::string system = default_system.value_or("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    std::string m = "# ollama modelfile auto-generated by pdsd\n\n";
    m += "FROM .\n\n";
    m += "TEMPLATE \"\"\"{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
         "{{ range .Messages }}{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
         "<|im_start|>assistant\n{{ else if eq .Role \"assistant\" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}\"\"\"\n\n";
    if (!system.empty()) m += "SYSTEM \"\"\"" + system + "\"\"\"\n\n";
    m += "PARAMETER stop \"<|im_end|>\"\n";
    m += "PARAMETER num_ctx 4096\n";
    return m;
}

ExportOptions options_from_lf(const LfArgs& a) {
    ExportOptions o;
    o.model_name_or_path = a.model.model_name_or_path;
    o.adapter_name_or_path = a.model.adapter_name_or_path;
    o.template_name = a.data.template_name;
    o.default_system = a.data.default_system;
    o.export_dir = a.export_.export_dir;
    o.export_dtype = a.export_.export_dtype;
    o.gguf_type = a.export_.gguf_type;
    if (o.model_name_or_path.empty()) {
        throw UsageError(ErrorInfo{}.at("model_name_or_path").msg("missing").hint("the base model folder, e.g. Qwen/Qwen2.5-0.5B-Instruct downloaded locally"));
    }
    if (o.export_dir.empty()) {
        throw UsageError(ErrorInfo{}.at("export_dir").msg("Please specify `export_dir` to save model."));
    }
    if (a.finetuning.finetuning_type != "lora") {
        throw UsageError(ErrorInfo{}.at("finetuning_type").expected("lora").found(a.finetuning.finetuning_type)
                             .hint("pdsd export merges LoRA adapters"));
    }
    if (a.model.quantization_bit) {  // LLaMA-Factory refuses the same way
        throw UsageError(ErrorInfo{}.at("quantization_bit").msg("adapters are merged onto the unquantized base")
                             .found(std::to_string(*a.model.quantization_bit))
                             .hint("drop quantization_bit: a QLoRA adapter merges into the original bf16/fp32 weights"));
    }
    if (a.export_.export_legacy_format) {
        throw UsageError(ErrorInfo{}.at("export_legacy_format").expected("false").found("true")
                             .hint("pdsd writes safetensors only; pickle .bin checkpoints can run code when loaded"));
    }
    if (a.export_.export_format != "safetensors" && a.export_.export_format != "gguf") {
        throw UsageError(ErrorInfo{}.at("export_format").expected("safetensors or gguf").found(a.export_.export_format));
    }
    o.export_format = a.export_.export_format;
    if (a.export_.export_device != "cpu" && a.export_.export_device != "auto") {
        throw UsageError(ErrorInfo{}.at("export_device").expected("cpu or auto").found(a.export_.export_device));
    }
    if (!(a.export_.export_size > 0)) {
        throw UsageError(ErrorInfo{}.at("export_size").expected("a positive number of GB").found(std::to_string(a.export_.export_size)));
    }
    o.max_shard_bytes = static_cast<uint64_t>(std::llround(a.export_.export_size * 1e9));
    if (o.export_dtype != "auto") (void)model::parse_dtype_name(o.export_dtype);  // validate early
    return o;
}

ExportReport run_export(const ExportOptions& o) {
    auto t0 = std::chrono::steady_clock::now();
    if (o.export_dir.empty()) throw UsageError(ErrorInfo{}.at("export_dir").msg("Please specify `export_dir` to save model."));
    fs::path final_dir = fs::absolute(fs::path(o.export_dir)).lexically_normal();
    if (final_dir.filename().empty()) final_dir = final_dir.parent_path();
    check_target(final_dir);
    if (o.export_format != "safetensors" && o.export_format != "gguf") {
        throw UsageError(ErrorInfo{}.at("export_format").expected("safetensors or gguf").found(o.export_format));
    }
    if (o.export_format == "gguf") (void)parse_gguf_type(o.gguf_type);  // validate before any work
    if (!fs::exists(o.model_name_or_path)) {
        throw IoError(ErrorInfo{o.model_name_or_path}.msg("base model not found")
                          .hint("model_name_or_path must be a local Hugging Face model folder"));
    }
    fs::path base_dir = base_folder(o.model_name_or_path);
    Checkpoint base = Checkpoint::open(o.model_name_or_path);
    std::vector<lora::Adapter> adapters = load_adapters(o, base);
    if (adapters.empty()) log::warn("export", "no adapter given: the export only copies (and casts) the base model");

    std::optional<c10::ScalarType> forced;
    if (o.export_dtype != "auto") forced = model::parse_dtype_name(o.export_dtype);
    if (!o.template_name.empty() && o.template_name != "qwen") {
        throw UsageError(ErrorInfo{}.at("template '" + o.template_name + "'").expected("qwen")
                             .hint("pdsd knows the Qwen2.5 chat template only; it is needed for the Ollama Modelfile"));
    }

    // Which adapters touch each base weight, in adapter order.
    std::map<std::string, std::vector<std::pair<const lora::LoraModule*, bool>>> deltas;
    for (const auto& a : adapters) {
        for (const auto& m : a.modules) deltas[m.base_weight()].push_back({&m, a.config.fan_in_fan_out});
    }

    // Output plan: every base tensor, in sorted name order (the index lists them sorted too).
    std::vector<std::string> names = base.names();
    std::vector<TensorView> specs;
    specs.reserve(names.size());
    uint64_t bytes_total = 0;
    for (const auto& n : names) {
        const TensorInfo& ti = base.info(n);
        TensorView s;
        s.name = n;
        s.dtype = (forced && is_float(ti.dtype)) ? model::from_scalar_type(*forced) : ti.dtype;
        s.shape = ti.shape;
        s.nbytes = ti.numel() * dtype_size(s.dtype);
        bytes_total += s.nbytes;
        specs.push_back(s);
    }

    // Temp folder beside the target, so the final rename stays on one file system.
    StagedFolder tmp(final_dir, "tmp");

    ExportReport rep;
    rep.export_dir = final_dir.string();
    rep.tensors_total = static_cast<int64_t>(names.size());
    rep.bytes_total = bytes_total;

    at::Tensor live;  // the one produced tensor alive at a time
    size_t previous = names.size();
    auto produce = [&](size_t i) -> TensorView {
        throw_if_interrupted();
        if (previous < names.size()) {  // written by now: its base pages are no longer needed
            live = at::Tensor();
            drop_pages(base.data(names[previous]), base.info(names[previous]).nbytes());
        }
        previous = i;
        const std::string& n = names[i];
        at::Tensor w = model::checkpoint_tensor(base, n);  // zero-copy view, read-only
        c10::ScalarType out_t = model::to_scalar_type(specs[i].dtype);
        auto it = deltas.find(n);
        if (it == deltas.end()) {
            live = (w.scalar_type() == out_t) ? w : w.to(out_t);
        } else {
            // float32 copy of the base weight, plus every adapter's delta, rounded once.
            at::Tensor acc = w.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
            for (const auto& [m, fifo] : it->second) acc.add_(m->delta(fifo));
            live = acc.to(out_t);
            rep.tensors_merged++;
            if (!at::equal(live, w.to(out_t))) rep.tensors_changed++;
        }
        at::Tensor keep;
        TensorView v = model::tensor_view(n, live, keep);
        live = keep;
        return v;
    };
    // Output dtype for config.json: the forced one, else the most common stored one.
    const std::string out_dtype_name = forced ? hf_torch_dtype_name(model::from_scalar_type(*forced)) : hf_majority_dtype(specs);
    rep.output_dtype = out_dtype_name;
    // Tokenizer: base folder first, else the last adapter (LLaMA-Factory saves one beside it).
    std::vector<fs::path> tok_sources = {base_dir};
    for (auto it = o.adapter_name_or_path.rbegin(); it != o.adapter_name_or_path.rend(); ++it) tok_sources.push_back(*it);
    std::vector<std::string> files =
        write_hf_model_folder(tmp.path(), specs, produce, o.max_shard_bytes, base_dir, tok_sources, out_dtype_name);
    live = at::Tensor();
    log::info("export", log::cat("wrote ", files.size(), " file(s), ", bytes_total, " bytes of tensors, ",
                                 rep.tensors_merged, " weights merged"));
    if (!adapters.empty() && rep.tensors_changed == 0) {
        log::warn("export", "no weight changed: the adapters' deltas are zero or below the output dtype's rounding");
    }
    // With a GGUF, Ollama is pointed at it (`FROM .` would make Ollama convert the safetensors itself).
    const std::string gguf_file =
        o.export_format == "gguf" ? std::string("model-") + gguf_type_name(parse_gguf_type(o.gguf_type)) + ".gguf" : "";
    if (!o.template_name.empty()) {
        std::string modelfile = ollama_modelfile(o.template_name, o.default_system);
        if (!gguf_file.empty()) modelfile = modelfile_from(modelfile, "./" + gguf_file);
        write_file_atomic((tmp.path() / "Modelfile").string(), modelfile);
        files.push_back("Modelfile");
    }

    // Self-check on the temp folder, so a failing export never gets the final name.
    if (o.verify && !adapters.empty()) {
        rep.verify = self_check_export(o, tmp.path().string(), &base);
    }

    // GGUF beside the safetensors, converted from the verified merged folder.
    if (o.export_format == "gguf") {
        GgufOptions go;
        go.type = parse_gguf_type(o.gguf_type);
        go.name = final_dir.filename().string();
        rep.gguf_file = gguf_file;
        GgufReport gr = write_gguf(tmp.path().string(), (tmp.path() / rep.gguf_file).string(), go);
        rep.gguf_bytes = gr.file_bytes;
        files.push_back(rep.gguf_file);
    }

    // Manifest: size and sha256 of every file, written last.
    std::sort(files.begin(), files.end());
    json mf;
    mf["format"] = "pdsd-export-manifest/1";
    mf["pdsd_version"] = PDSD_VERSION;
    mf["base_model"] = o.model_name_or_path;
    mf["adapters"] = o.adapter_name_or_path;
    mf["torch_dtype"] = out_dtype_name;
    mf["tensors"] = rep.tensors_total;
    mf["tensors_merged"] = rep.tensors_merged;
    json jf = json::array();
    for (const auto& f : files) {
        fs::path p = tmp.path() / f;
        jf.push_back({{"path", f}, {"bytes", fs::file_size(p)}, {"sha256", sha256_file(p.string())}});
    }
    mf["files"] = jf;
    write_json_file(tmp.path() / "pdsd_manifest.json", mf);
    files.push_back("pdsd_manifest.json");

    throw_if_interrupted();
    tmp.install();
    rep.files = files;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("export", log::cat("export written to ", final_dir.string(), " in ", secs, " s"));
    return rep;
}

VerifyReport self_check_export(const ExportOptions& o, const std::string& dir, const Checkpoint* base_ck) {
    std::optional<Checkpoint> own_base;
    if (!base_ck) own_base.emplace(Checkpoint::open(o.model_name_or_path));
    const Checkpoint& base = base_ck ? *base_ck : *own_base;
    VerifyReport r = verify_export(o, dir, &base);
    check_merged_logits(o, dir, base, r);
    return r;
}

VerifyReport verify_export(const ExportOptions& o, const std::string& dir, const Checkpoint* base_ck) {
    std::optional<Checkpoint> own_base;
    if (!base_ck) own_base.emplace(Checkpoint::open(o.model_name_or_path));
    const Checkpoint& base = base_ck ? *base_ck : *own_base;
    Checkpoint out = Checkpoint::open(dir);
    std::vector<lora::Adapter> adapters;
    for (const auto& a : o.adapter_name_or_path) adapters.push_back(lora::load_adapter(a));
    std::map<std::string, std::vector<std::pair<const lora::LoraModule*, bool>>> deltas;
    for (const auto& a : adapters) {
        for (const auto& m : a.modules) deltas[m.base_weight()].push_back({&m, a.config.fan_in_fan_out});
    }
    VerifyReport r;
    std::vector<std::string> base_names = base.names(), out_names = out.names();
    if (base_names != out_names) {
        throw DataError(ErrorInfo{dir}.msg("self-check failed: the export's tensor names differ from the base model's").hint(kSelfCheckHint));
    }
    for (const auto& n : base_names) {
        at::Tensor w = model::checkpoint_tensor(base, n);
        at::Tensor wo = model::checkpoint_tensor(out, n);
        if (w.sizes() != wo.sizes()) {
            throw DataError(ErrorInfo{dir}.at("tensor '" + n + "'").msg("self-check failed: shape differs from the base").hint(kSelfCheckHint));
        }
        auto it = deltas.find(n);
        if (it == deltas.end()) {
            bool same = w.scalar_type() == wo.scalar_type()
                            ? std::memcmp(base.data(n), out.data(n), out.info(n).nbytes()) == 0
                            : at::equal(w.to(wo.scalar_type()), wo);
            drop_pages(base.data(n), base.info(n).nbytes());
            drop_pages(out.data(n), out.info(n).nbytes());
            if (!same) {
                throw DataError(ErrorInfo{dir}.at("tensor '" + n + "'").msg("self-check failed: an unadapted tensor differs from the base").hint(kSelfCheckHint));
            }
            r.tensors_identical++;
            continue;
        }
        // Probes x [in, k]: deterministic, varied signs and magnitudes.
        bool fifo = it->second.front().second;
        at::Tensor W = w.to(at::kFloat), Wo = wo.to(at::kFloat);
        if (fifo) { W = W.t(); Wo = Wo.t(); }  // [out, in]
        int64_t in = W.size(1);
        at::Tensor x = at::arange(in * o.verify_probes, at::kFloat).mul_(0.7548776662f).sin_().reshape({in, o.verify_probes});
        at::Tensor ax = x.abs();
        at::Tensor y_out = at::matmul(Wo, x);
        at::Tensor y_ref = at::matmul(W, x);
        at::Tensor mag = at::matmul(W.abs(), ax);
        for (const auto& [m, f] : it->second) {
            // Unmerged LoRA path: scale * B (A x).
            y_ref.add_(at::matmul(m->B, at::matmul(m->A, x)).mul_(m->scale));
            mag.add_(at::matmul(m->B.abs(), at::matmul(m->A.abs(), ax)).mul_(std::abs(m->scale)));
        }
        // Rounding W + dW to the output dtype moves each element by <= u |W'_ij| / (1 - u);
        // float32 products and sums add <= ~in * 2^-24 of the magnitudes.
        double u = unit_roundoff(wo.scalar_type());
        at::Tensor mag_out = at::matmul(Wo.abs(), ax);
        at::Tensor tol = mag_out.mul(2 * u).add_(mag.add(mag_out).mul_(2.0 * in * std::ldexp(1.0, -24))).add_(1e-30);
        at::Tensor diff = y_out.sub(y_ref).abs_();
        r.max_abs_diff = std::max(r.max_abs_diff, diff.max().item<double>());
        r.max_tolerance_ratio = std::max(r.max_tolerance_ratio, diff.div(tol).max().item<double>());
        r.tensors_checked++;
    }
    r.ok = r.max_tolerance_ratio <= 1.0;
    log::info("export", log::cat("self-check: ", r.tensors_checked, " merged weights probed, max |W'x - (Wx + s*B*A*x)| = ",
                                 r.max_abs_diff, " (", r.max_tolerance_ratio, " of the dtype-rounding bound); ",
                                 r.tensors_identical, " other tensors identical to the base"));
    if (!r.ok) {
        throw DataError(ErrorInfo{dir}.msg("self-check failed: merged weights disagree with base + adapter")
                            .expected("difference within the output dtype's rounding bound")
                            .found(log::cat("max |diff| ", r.max_abs_diff, ", ", r.max_tolerance_ratio, " x the bound"))
                            .hint(kSelfCheckHint));
    }
    return r;
}

}  // namespace pdsd::exporter
