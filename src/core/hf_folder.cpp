// Hugging Face model folder writer; see hf_folder.h.
#include "pdsd/core/hf_folder.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <map>

#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace pdsd {

namespace {

const char* const kGenerationFiles[] = {"generation_config.json"};
const char* const kTokenizerFiles[] = {"tokenizer.json",      "tokenizer_config.json", "vocab.json",
                                       "merges.txt",          "special_tokens_map.json", "added_tokens.json",
                                       "chat_template.jinja", "chat_template.json"};

bool is_float(DType d) { return d == DType::BF16 || d == DType::F16 || d == DType::F32 || d == DType::F64; }

void write_json_file(const fs::path& p, const json& j) { write_file_atomic(p.string(), j.dump(2) + "\n"); }

// Copies a file; the copy is owner-writable even when the source is read-only.
void copy_plain(const fs::path& from, const fs::path& to) {
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
}

// Staged (or replaced) folders `.<name>.pdsd-*-<pid>` of `final_dir` whose process is gone
// (killed, power loss): they can hold a whole model, so the next writer removes them.
void remove_stale(const fs::path& final_dir) {
    const std::string prefix = "." + final_dir.filename().string() + ".pdsd-";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(final_dir.parent_path(), ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind(prefix, 0) != 0) continue;
        const auto dash = name.find_last_of('-');
        char* end = nullptr;
        const long pid = std::strtol(name.c_str() + dash + 1, &end, 10);
        if (pid <= 0 || *end != '\0' || pid == ::getpid()) continue;
        if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
        log::info("core", "removing " + e.path().string() + ", left by an interrupted run (process " + std::to_string(pid) + ")");
        fs::remove_all(e.path(), ec);
    }
}

}  // namespace

std::string hf_torch_dtype_name(DType d) {
    switch (d) {
        case DType::BF16: return "bfloat16";
        case DType::F16: return "float16";
        case DType::F32: return "float32";
        case DType::F64: return "float64";
        default: return dtype_name(d);
    }
}

std::string hf_majority_dtype(const std::vector<TensorView>& specs) {
    std::map<DType, int64_t> count;
    for (const auto& s : specs) {
        if (is_float(s.dtype)) count[s.dtype]++;
    }
    if (count.empty()) return {};
    auto most = std::max_element(count.begin(), count.end(), [](auto& x, auto& y) { return x.second < y.second; });
    return hf_torch_dtype_name(most->first);
}

HfSideFiles write_hf_side_files(const fs::path& out_dir, const fs::path& base_dir, const std::vector<fs::path>& tokenizer_sources,
                                const std::string& torch_dtype) {
    HfSideFiles r;
    const fs::path cfg = base_dir / "config.json";
    if (fs::exists(cfg)) {
        json c = read_json_file(cfg.string());
        if (!torch_dtype.empty()) {
            bool set = false;
            for (const char* key : {"torch_dtype", "dtype"}) {
                if (c.contains(key)) {
                    c[key] = torch_dtype;
                    set = true;
                }
            }
            if (!set) c["torch_dtype"] = torch_dtype;
        }
        write_json_file(out_dir / "config.json", c);
        r.files.push_back("config.json");
        r.has_config = true;
    }
    for (const char* f : kGenerationFiles) {
        if (fs::exists(base_dir / f)) {
            copy_plain(base_dir / f, out_dir / f);
            r.files.push_back(f);
        }
    }
    for (const auto& src : tokenizer_sources) {
        if (!fs::exists(src / "tokenizer_config.json") && !fs::exists(src / "tokenizer.json")) continue;
        for (const char* f : kTokenizerFiles) {
            if (!fs::exists(src / f)) continue;
            if (std::string(f) == "tokenizer_config.json") {
                json t = read_json_file((src / f).string());
                t["padding_side"] = "left";  // LLaMA-Factory restores it before saving
                write_json_file(out_dir / f, t);
            } else {
                copy_plain(src / f, out_dir / f);
            }
            r.files.push_back(f);
        }
        r.has_tokenizer = true;
        break;
    }
    return r;
}

StagedFolder::StagedFolder(const fs::path& final_dir, const std::string& tag) : final_(final_dir) {
    fs::create_directories(final_.parent_path());
    remove_stale(final_);
    path_ = final_.parent_path() / ("." + final_.filename().string() + ".pdsd-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
}

StagedFolder::~StagedFolder() {
    if (armed_) {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
}

void StagedFolder::install() {
    if (fs::exists(final_)) {
        const fs::path old = final_.parent_path() / ("." + final_.filename().string() + ".pdsd-old-" + std::to_string(::getpid()));
        fs::remove_all(old);
        fs::rename(final_, old);
        fs::rename(path_, final_);
        std::error_code ec;
        fs::remove_all(old, ec);
    } else {
        fs::rename(path_, final_);
    }
    armed_ = false;
}

std::vector<std::string> write_hf_model_folder(const fs::path& out_dir, const std::vector<TensorView>& specs,
                                               const TensorProducer& produce, uint64_t max_shard_bytes, const fs::path& base_dir,
                                               const std::vector<fs::path>& tokenizer_sources, const std::string& torch_dtype) {
    std::vector<std::string> files = write_sharded_lazy(out_dir.string(), "model", specs, max_shard_bytes, produce);
    HfSideFiles side = write_hf_side_files(out_dir, base_dir, tokenizer_sources, torch_dtype);
    if (!side.has_config) log::warn("core", base_dir.string() + " has no config.json; " + out_dir.string() + " will not load in transformers");
    if (!side.has_tokenizer) log::warn("core", "no tokenizer files found for " + out_dir.string() + "; copy them in by hand");
    files.insert(files.end(), side.files.begin(), side.files.end());
    return files;
}

}  // namespace pdsd
