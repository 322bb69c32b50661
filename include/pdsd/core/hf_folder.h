// Writing a Hugging Face model folder: sharded safetensors (core/safetensors.h) plus the
// files that travel with the weights (config.json with its dtype set, generation_config.json,
// tokenizer files), staged in a hidden folder beside the target and renamed into place.
//
// Shared by `pdsd export` (merged LoRA models) and `pdsd train` (finetuning_type full /
// freeze checkpoints and final models), which is why it lives in core, below both.
// Torch-free: the caller produces each tensor's bytes (write_sharded_lazy's producer).
#pragma once

#include "pdsd/core/safetensors.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace pdsd {

// "bfloat16" / "float16" / "float32" / "float64" (config.json's torch_dtype spelling).
std::string hf_torch_dtype_name(DType dtype);

// The dtype config.json should name for `specs`: the most common floating-point dtype.
// Empty when no tensor is floating point.
std::string hf_majority_dtype(const std::vector<TensorView>& specs);

struct HfSideFiles {
    std::vector<std::string> files;  // written, relative to the output folder
    bool has_config = false;
    bool has_tokenizer = false;
};

// Into `out_dir`: base_dir/config.json with torch_dtype (and dtype, when present) set to
// `torch_dtype` (kept as is when empty), generation_config.json, and the tokenizer files of the
// first folder of `tokenizer_sources` that has any (tokenizer_config.json gets padding_side
// "left", as LLaMA-Factory saves it). Missing files are skipped; the result says what was found.
HfSideFiles write_hf_side_files(const std::filesystem::path& out_dir, const std::filesystem::path& base_dir,
                                const std::vector<std::filesystem::path>& tokenizer_sources,
                                const std::string& torch_dtype);

// A hidden folder `.<name>.pdsd-<tag>-<pid>` beside `final_dir` (same file system, so the
// final rename is atomic), removed on destruction unless install()ed. Such folders of
// final_dir left by processes that no longer run (killed) are removed when one is made.
class StagedFolder {
public:
    StagedFolder(const std::filesystem::path& final_dir, const std::string& tag);
    ~StagedFolder();
    StagedFolder(const StagedFolder&) = delete;
    StagedFolder& operator=(const StagedFolder&) = delete;

    const std::filesystem::path& path() const { return path_; }
    // Puts the staged folder in place of final_dir (an existing final_dir is replaced).
    void install();

private:
    std::filesystem::path final_, path_;
    bool armed_ = true;
};

// An HF model folder in `out_dir` (which must exist): `model.safetensors` or shards of at most
// max_shard_bytes + index, then write_hf_side_files. Returns every file name written.
std::vector<std::string> write_hf_model_folder(const std::filesystem::path& out_dir, const std::vector<TensorView>& specs,
                                               const TensorProducer& produce, uint64_t max_shard_bytes,
                                               const std::filesystem::path& base_dir,
                                               const std::vector<std::filesystem::path>& tokenizer_sources,
                                               const std::string& torch_dtype);

}  // namespace pdsd
