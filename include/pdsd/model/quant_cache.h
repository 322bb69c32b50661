// On-disk cache of the weights quantized at load (`--quant int8|int4`, model/quant.h), so that
// only the first load of a checkpoint pays for quantizing (4-12 s for Qwen2.5-0.5B on 2 cores);
// later loads map the cached file and its tensors become the QuantWeights (zero copy).
//
// Where: $PDSD_CACHE_DIR, else $XDG_CACHE_HOME/pdsd/quant, else ~/.cache/pdsd/quant; never the
// model folder (it may be read-only or shared). PDSD_QUANT_CACHE=0 turns the cache off.
// Size: at most $PDSD_QUANT_CACHE_MAX_GB (default 20 GB) of cache files; the least recently
// used (a hit refreshes the file's mtime) are removed after each load, never the one in use.
// Key: the checkpoint folder's resolved path, each shard's name, size and mtime (ns), the
// dtype the weights were quantized from, the type and kFormatVersion; a changed checkpoint
// gives another file name (and the older file of that folder and type is removed once the new
// one is written). The key is also stored in the file's metadata and checked on read.
// File: safetensors, for each weight `<hf name>.q` (int8: I8 (n, kp); int4: U8 (n, kp / 2)),
// `<hf name>.scale` (F16 (n, kp / 32)) and in int4 `<hf name>.min` (F16), written atomically
// (temp + rename). A cache that fails to read or does not match is a warning and is rewritten;
// one that cannot be written is a warning: loading never fails because of the cache.
#pragma once

#include "pdsd/core/safetensors.h"
#include "pdsd/model/quant.h"

#include <string>
#include <vector>

namespace pdsd::model::quant {

// Bump when quantize()'s output bytes or the cache layout change: older files stop matching.
constexpr int kFormatVersion = 1;

// One weight quantize_model replaces: its HF name, its float parameter, the slot its quantized
// copy goes in, and the type it gets (int4 mode keeps v_proj and embedding / lm_head int8).
struct Slot {
    std::string name;
    at::Tensor* weight = nullptr;
    QuantWeightPtr* quant = nullptr;
    Type type = Type::none;
};
// Every slot of lm's model for `type` (int8 or int4), in a fixed order.
std::vector<Slot> model_slots(LoadedModel& lm, Type type);

// The cache folder from the environment (see above); "" when PDSD_QUANT_CACHE=0 or no home.
std::string cache_dir();
// The cache file inside `dir` for lm's checkpoint under `key` (the checkpoint's stamps, the
// type, the source dtype and the format version: see above) quantized to `type`.
std::string cache_path(const std::string& dir, const LoadedModel& lm, const std::string& key, Type type);

enum class CacheUse { off, hit, written, unwritable };
struct QuantizeResult {
    int64_t bytes = 0;        // quantized bytes (quantize_model's return)
    CacheUse use = CacheUse::off;
    std::string path;         // the cache file (empty when off)
};
// quantize_model through the cache: maps a matching cache file, else quantizes and writes it.
QuantizeResult quantize_model_cached(LoadedModel& lm, Type type, const Checkpoint& ck);

}  // namespace pdsd::model::quant
