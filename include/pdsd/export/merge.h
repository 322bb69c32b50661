// `pdsd export`: merge LoRA adapters into a base Hugging Face checkpoint and write a
// self-contained model folder (what `llamafactory-cli export` writes, plus a manifest).
//
//   W' = W + scale_1 B_1 A_1 + scale_2 B_2 A_2 + ...   per adapted Linear weight,
// computed in float32 from the stored base weight, rounded once to the output dtype.
// (LLaMA-Factory/PEFT merge adapter by adapter in the model's load dtype; with one adapter
// and a float32 load, as in the tiny-qwen2-merged fixture, both give identical bits.)
//
// Memory: base tensors are zero-copy views of the mmapped checkpoint and output shards are
// produced one tensor at a time (core write_sharded_lazy), so the process holds at most one
// merged tensor beyond the page cache: peak memory is about one copy of the model.
//
// Output folder (written to a hidden temp folder beside export_dir, renamed at the end, so
// an interrupted or failed export never leaves a half folder under the final name):
//   model.safetensors or model-0000i-of-0000N.safetensors + model.safetensors.index.json
//   config.json (torch_dtype/dtype updated), generation_config.json, tokenizer files,
//   Modelfile (Ollama, for template qwen), pdsd_manifest.json (size + sha256 per file).
#pragma once

#include "pdsd/core/lf_args.h"
#include "pdsd/core/safetensors.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::exporter {

struct ExportOptions {
    std::string model_name_or_path;                  // base HF folder (or .safetensors/.index.json's folder)
    std::vector<std::string> adapter_name_or_path;   // applied in order; may be empty (dtype conversion only)
    std::string template_name = "qwen";              // chat template for the Modelfile ("" = no Modelfile)
    std::optional<std::string> default_system;       // overrides the template's default system prompt
    std::string export_dir;
    uint64_t max_shard_bytes = 5000000000ULL;        // export_size GB x 10^9 (HF's "5GB")
    std::string export_dtype = "auto";               // auto (keep each tensor's stored dtype) | bf16 | fp16 | fp32
    bool verify = true;                              // self-check after writing
    int64_t verify_probes = 4;                       // probe vectors per adapted weight
    uint64_t verify_logits_max_bytes = 8000000000ULL; // logits check only when two fp32 copies of the model fit this
    // export_format "gguf": the merged folder also gets `model-<gguf_type>.gguf` (export/gguf.h),
    // converted from the merged safetensors before the folder is renamed into place.
    std::string export_format = "safetensors";       // safetensors | gguf
    std::string gguf_type = "bf16";                  // bf16 | f16 | q8_0 (2D weights; norms and biases F32)
};

// Reads LLaMA-Factory export args (finetuning_type must be "lora", export_legacy_format
// false, export_format safetensors or gguf) into ExportOptions. Throws UsageError / ConfigError.
ExportOptions options_from_lf(const LfArgs& args);

struct VerifyReport {
    int64_t tensors_checked = 0;       // adapted weights probed
    int64_t tensors_identical = 0;     // other tensors compared bit for bit with the (cast) base
    double max_abs_diff = 0;           // max |W' x - (W x + s B A x)| over probes
    double max_tolerance_ratio = 0;    // max diff / allowed; <= 1 passes
    bool ok = true;
    // Logits check (Qwen2 models): the merged folder loaded by pdsd's Qwen2 (fp32 compute)
    // vs the same model with base + adapters applied in fp32 in memory.
    bool logits_checked = false;
    double logits_max_abs_diff = 0;
    double logits_tolerance = 0;
};

struct ExportReport {
    std::string export_dir;
    std::vector<std::string> files;    // every file written, relative to export_dir
    int64_t tensors_total = 0;
    int64_t tensors_merged = 0;        // weights that received at least one LoRA delta
    int64_t tensors_changed = 0;       // merged weights whose output bits differ from the base
    uint64_t bytes_total = 0;          // tensor bytes written
    std::string output_dtype;          // "bfloat16" ... (config.json torch_dtype)
    std::optional<VerifyReport> verify;
    std::string gguf_file;             // relative to export_dir; empty unless export_format gguf
    uint64_t gguf_bytes = 0;
};

// Runs the whole export. Throws pdsd::Error; on any error the final export_dir is untouched.
ExportReport run_export(const ExportOptions& options);

// Both self-checks below on a written folder (what run_export runs before publishing, and
// `pdsd export --check DIR` on any merged folder, LLaMA-Factory's included).
VerifyReport self_check_export(const ExportOptions& options, const std::string& dir, const Checkpoint* base = nullptr);

// Self-check of a written export against base + adapters applied unmerged: for every
// adapted weight, compare W' x with W x + scale B (A x) on random probe vectors, with a
// tolerance derived from the output dtype's rounding (|W' - (W + dW)| <= ulp/2 per element,
// so |diff| <= eps_out/2 * (|W'| |x|) + fp32 slack); every other tensor must equal the base
// (after the dtype cast) bit for bit. Throws DataError when a check fails.
// `base` (optional) is the already-open base checkpoint, to share its mapping.
VerifyReport verify_export(const ExportOptions& options, const std::string& dir, const Checkpoint* base = nullptr);

// Second self-check of a written Qwen2 export. (1) Every adapted weight as written is within
// the output dtype's rounding of S = W + sum(scale B A), computed in fp32 from the base and the
// adapter files: |W' - S| <= 4u (|S| + sum|scale B A|) per element (u: unit roundoff; covers
// round-to-nearest of S and PEFT's merge in the model dtype). (2) The folder loaded back as
// pdsd loads it gives, within 1e-4 x max(1, max|logits|), the logits of the base model's own
// config holding the folder's tensors. Neither half compares with the unrounded fp32
// network, so rounding the merge to bf16/fp16 never fails the check, while a wrong scale,
// transposed B A, a dropped or misplaced module, or a folder that loads as another model
// does. Skipped for non-Qwen2 folders. Throws DataError, with what to do next, on failure.
void check_merged_logits(const ExportOptions& options, const std::string& dir, const Checkpoint& base,
                         VerifyReport& report);

// The Ollama Modelfile LLaMA-Factory writes for `template_name` (only "qwen" is known;
// other names throw UsageError). `default_system` overrides the template's.
std::string ollama_modelfile(const std::string& template_name, const std::optional<std::string>& default_system);

}  // namespace pdsd::exporter
