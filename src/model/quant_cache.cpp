#include "pdsd/model/quant_cache.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pdsd::model::quant {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

// The key's text (also stored in the file's metadata, so a hash collision cannot match).
std::string cache_key(const LoadedModel& lm, const Checkpoint& ck, Type type, c10::ScalarType source) {
    std::error_code ec;
    fs::path dir = fs::weakly_canonical(fs::path(lm.path), ec);
    if (ec) dir = fs::absolute(fs::path(lm.path));
    std::string key = log::cat("pdsd quant cache v", kFormatVersion, " ", type_name(type), " from ", c10::toString(source), "\n",
                               dir.string(), "\n");
    std::set<std::string> shards;
    for (const auto& name : ck.names()) shards.insert(ck.file_of(name));
    for (const auto& shard : shards) {
        struct stat st {};
        if (::stat(shard.c_str(), &st) != 0) throw IoError(ErrorInfo{shard}.msg("cannot stat the checkpoint shard"));
        key += log::cat(fs::path(shard).filename().string(), " ", static_cast<long long>(st.st_size), " ",
                        static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec, "\n");
    }
    return key;
}

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 14695981039346656037ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

// The tensor `name` of `f` as a view of its mapping, checked against dtype and shape.
at::Tensor view_of(const std::shared_ptr<SafetensorsFile>& f, const std::string& name, DType dtype, std::vector<int64_t> shape) {
    const TensorInfo* t = f->find(name);
    if (!t) throw FormatError(ErrorInfo{f->path()}.at("tensor '" + name + "'").msg("missing"));
    if (t->dtype != dtype || t->shape != shape) {
        throw FormatError(ErrorInfo{f->path()}.at("tensor '" + name + "'")
                              .expected(std::string(dtype_name(dtype)) + " " + shape_str(shape))
                              .found(std::string(dtype_name(t->dtype)) + " " + shape_str(t->shape)));
    }
    // The deleter holds the file (and so the mapping) until the last view is freed.
    return at::from_blob(const_cast<uint8_t*>(f->data(*t)), shape, [f](void*) {},
                         at::TensorOptions().dtype(to_scalar_type(dtype)));
}

// Every slot's QuantWeight read from the cache file at `path` (views, zero copy); throws
// IoError / FormatError when it cannot be read or does not match `key` and the model.
std::vector<QuantWeightPtr> read_cache(const std::string& path, const std::string& key, const std::vector<Slot>& slots) {
    auto f = std::make_shared<SafetensorsFile>(path);
    auto it = f->metadata().find("pdsd_quant_key");
    if (it == f->metadata().end() || it->second != key) {
        throw FormatError(ErrorInfo{path}.at("__metadata__.pdsd_quant_key").msg("written for another checkpoint or format"));
    }
    f->allow_private_writes();  // a stray write copies a page instead of faulting
    std::vector<QuantWeightPtr> out;
    for (const Slot& s : slots) {
        auto w = std::make_shared<QuantWeight>();
        w->type = s.type;
        w->n = s.weight->size(0);
        w->k = s.weight->size(1);
        w->kp = (w->k + kGroup - 1) / kGroup * kGroup;
        const bool int4 = s.type == Type::int4;
        w->q = view_of(f, s.name + ".q", int4 ? DType::U8 : DType::I8, {w->n, int4 ? w->kp / 2 : w->kp});
        w->scale = view_of(f, s.name + ".scale", DType::F16, {w->n, w->kp / kGroup});
        if (int4) w->min = view_of(f, s.name + ".min", DType::F16, {w->n, w->kp / kGroup});
        out.push_back(std::move(w));
    }
    if (!f->tensors().empty()) {  // start reading the file now (a hint, as the loader does for the checkpoint)
        const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
        const auto lo = reinterpret_cast<uintptr_t>(f->data(f->tensors().front())) & ~(page - 1);
        const auto hi = reinterpret_cast<uintptr_t>(f->data(f->tensors().back())) + f->tensors().back().nbytes();
        ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
    }
    return out;
}

void write_cache(const std::string& path, const std::string& key, const std::vector<Slot>& slots) {
    std::vector<TensorView> views;
    std::vector<at::Tensor> keep(3 * slots.size());   // the quantized tensors are contiguous: no copy is made
    size_t k = 0;
    for (const Slot& s : slots) {
        const QuantWeight& w = **s.quant;
        views.push_back(tensor_view(s.name + ".q", w.q, keep[k++]));   // I8 (int8) / U8 (int4 nibbles)
        views.push_back(tensor_view(s.name + ".scale", w.scale, keep[k++]));
        if (w.min.defined()) views.push_back(tensor_view(s.name + ".min", w.min, keep[k++]));
    }
    fs::create_directories(fs::path(path).parent_path());
    write_safetensors(path, views, {{"format", "pt"}, {"pdsd_quant_key", key}});
}

// The cache files of an older state of the same checkpoint folder and type (after a change of
// the checkpoint the key, and so the name, differs): removed once the new one is written, so a
// retrained folder does not pile up copies. Best effort: what cannot be read or removed stays.
void remove_stale(const std::string& path, const std::string& key) {
    const fs::path keep(path);
    const std::string name = keep.filename().string();
    const std::string prefix = name.substr(0, name.size() - std::string("0123456789abcdef.safetensors").size());
    const size_t l1 = key.find('\n'), l2 = key.find('\n', l1 + 1);
    const std::string folder = key.substr(l1 + 1, l2 - l1);  // the resolved path line, "\n" included
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(keep.parent_path(), ec)) {
        const std::string other = e.path().filename().string();
        if (other == name || other.rfind(prefix, 0) != 0 || e.path().extension() != ".safetensors") continue;
        try {
            SafetensorsFile f(e.path().string());
            auto it = f.metadata().find("pdsd_quant_key");
            if (it == f.metadata().end()) continue;
            const std::string& k = it->second;
            const size_t o1 = k.find('\n');
            if (o1 != std::string::npos && k.compare(o1 + 1, folder.size(), folder) == 0) {
                fs::remove(e.path(), ec);
                log::info("model", log::cat("removed the outdated quantized-weight cache ", e.path().string()));
            }
        } catch (const Error&) {
        }
    }
}

// The cache's size cap in bytes: $PDSD_QUANT_CACHE_MAX_GB (decimal GB, default 20; a value that
// is not a positive number is a warning and the default).
uint64_t cache_max_bytes() {
    constexpr double kDefaultGb = 20;
    const std::string v = env("PDSD_QUANT_CACHE_MAX_GB");
    double gb = kDefaultGb;
    if (!v.empty()) {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (end != v.c_str() + v.size() || !(x > 0) || x > 1e9)
            log::warn("model", log::cat("PDSD_QUANT_CACHE_MAX_GB='", v, "' is not a positive number of GB: using ", kDefaultGb));
        else
            gb = x;
    }
    return static_cast<uint64_t>(gb * 1e9);
}

// Keeps the cache folder under cache_max_bytes(): its cache files (<stem>-<type>-<16 hex>.safetensors),
// least recently used first (a hit refreshes a file's mtime), are removed until the rest fit;
// `keep` (the file just used) always stays. Other files in the folder are not counted or touched.
void trim_cache(const fs::path& dir, const fs::path& keep) {
    struct Entry { fs::file_time_type mtime; uint64_t size; fs::path path; };
    std::vector<Entry> files;
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string n = e.path().filename().string();
        const bool ours = e.path().extension() == ".safetensors" && (n.find("-int8-") != std::string::npos || n.find("-int4-") != std::string::npos);
        std::error_code ec2;
        if (!ours || !e.is_regular_file(ec2)) continue;
        const uint64_t size = e.file_size(ec2);
        const auto mtime = e.last_write_time(ec2);
        if (ec2) continue;
        files.push_back({mtime, size, e.path()});
        total += size;
    }
    const uint64_t cap = cache_max_bytes();
    std::sort(files.begin(), files.end(), [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
    for (const Entry& f : files) {
        if (total <= cap) break;
        if (f.path == keep) continue;
        if (fs::remove(f.path, ec)) {
            total -= f.size;
            log::info("model", log::cat("removed the least recently used quantized-weight cache ", f.path.string(), " (",
                                        f.size / 1000000, " MB; the cache is capped at PDSD_QUANT_CACHE_MAX_GB=", cap / 1e9, ")"));
        }
    }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string cache_dir() {
    if (env("PDSD_QUANT_CACHE") == "0") return "";
    if (!env("PDSD_CACHE_DIR").empty()) return env("PDSD_CACHE_DIR");
    if (!env("XDG_CACHE_HOME").empty()) return (fs::path(env("XDG_CACHE_HOME")) / "pdsd" / "quant").string();
    if (!env("HOME").empty()) return (fs::path(env("HOME")) / ".cache" / "pdsd" / "quant").string();
    return "";
}

std::string cache_path(const std::string& dir, const LoadedModel& lm, const std::string& key, Type type) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(key)));
    std::string stem = fs::path(lm.path).lexically_normal().filename().string();
    if (stem.empty() || stem == "." || stem == "..") stem = "model";
    return (fs::path(dir) / (stem + "-" + type_name(type) + "-" + hex + ".safetensors")).string();
}

QuantizeResult quantize_model_cached(LoadedModel& lm, Type type, const Checkpoint& ck) {
    QuantizeResult r;
    const std::string dir = lm.device.is_cpu() && type != Type::none ? cache_dir() : std::string();
    if (dir.empty()) {  // off (or nothing to cache: quantize_model gives the usual answer / error)
        r.bytes = quantize_model(lm, type);
        return r;
    }
    at::NoGradGuard no_grad;
    std::vector<Slot> slots = model_slots(lm, type);
    const c10::ScalarType source = slots.front().weight->scalar_type();
    const std::string key = cache_key(lm, ck, type, source);
    r.path = cache_path(dir, lm, key, type);
    const auto t0 = std::chrono::steady_clock::now();
    if (fs::exists(r.path)) {
        try {
            std::vector<QuantWeightPtr> cached = read_cache(r.path, key, slots);
            lm.model->release_packed_weights();
            for (size_t i = 0; i < slots.size(); ++i) {
                r.bytes += cached[i]->nbytes();
                release_float_weight(*slots[i].weight, lm.dtype);
                *slots[i].quant = std::move(cached[i]);
            }
            r.use = CacheUse::hit;
            std::error_code ec;
            fs::last_write_time(r.path, fs::file_time_type::clock::now(), ec);   // recently used (best effort)
            trim_cache(dir, r.path);
            log::info("model", log::cat("loaded quantized weights (", type_name(type), ", ", r.bytes / 1000000, " MB) from cache ",
                                        r.path, " in ", seconds_since(t0), " s"));
            return r;
        } catch (const Error& e) {
            log::warn("model", log::cat("ignoring the quantized-weight cache (it will be rewritten): ", e.what()));
        }
    }
    r.bytes = quantize_model(lm, type);
    const auto t1 = std::chrono::steady_clock::now();
    try {
        write_cache(r.path, key, slots);
        r.use = CacheUse::written;
        remove_stale(r.path, key);
        trim_cache(dir, r.path);
        log::info("model", log::cat("quantized weights cached in ", r.path, " (", seconds_since(t1), " s to write; the next load maps it)"));
    } catch (const std::exception& e) {
        r.use = CacheUse::unwritable;
        log::warn("model", log::cat("could not cache the quantized weights in ", r.path, ": ", e.what(),
                                    " (loading goes on; set PDSD_CACHE_DIR to a writable folder, or PDSD_QUANT_CACHE=0)"));
    }
    return r;
}

}  // namespace pdsd::model::quant
