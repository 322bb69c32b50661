#include "pdsd/core/safetensors.h"

#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include <cerrno>
#include <sys/mman.h>

namespace pdsd {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
// The reference implementation refuses headers above 100 MB; so do we, before
// allocating anything for a header length read from an untrusted file.
constexpr uint64_t k_max_header_bytes = 100ull * 1000 * 1000;

struct DTypeEntry {
    DType dt;
    const char* name;
    size_t size;
};
constexpr DTypeEntry k_dtypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::I32, "I32", 4}, {DType::I64, "I64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},
};

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// numel x elem_size with overflow detection; nullopt on overflow.
std::optional<uint64_t> span_bytes(const std::vector<int64_t>& shape, size_t elem) {
    uint64_t n = elem;
    for (int64_t d : shape) {
        if (d < 0) return std::nullopt;
        if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) return std::nullopt;
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

FormatError bad(const std::string& source, const std::string& where, const std::string& expected,
                const std::string& found) {
    return FormatError(ErrorInfo{source}.at(where).expected(expected).found(found)
                           .hint("the file is not a valid safetensors file; re-download or re-export it"));
}
}  // namespace

size_t dtype_size(DType dt) {
    for (const auto& e : k_dtypes) if (e.dt == dt) return e.size;
    return 0;
}

const char* dtype_name(DType dt) {
    for (const auto& e : k_dtypes) if (e.dt == dt) return e.name;
    return "?";
}

std::optional<DType> parse_dtype(const std::string& name) {
    for (const auto& e : k_dtypes) if (name == e.name) return e.dt;
    return std::nullopt;
}

uint64_t TensorInfo::numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source) {
    if (size < 8) throw bad(source, "file length", "at least 8 bytes", std::to_string(size) + " bytes (truncated)");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian u64
    if (n > k_max_header_bytes) {
        throw bad(source, "header length", "at most 100 MB", std::to_string(n) + " bytes");
    }
    if (n > size - 8) {
        throw bad(source, "header length", "header inside the file (" + std::to_string(size - 8) + " bytes after the prefix)",
                  std::to_string(n) + " bytes");
    }
    json header;
    try {
        header = json::parse(data + 8, data + 8 + n);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for "1e999"
        throw bad(source, "header", "valid JSON", std::string("parse error: ") + e.what());
    }
    if (!header.is_object()) throw bad(source, "header", "a JSON object", header.type_name());

    SafetensorsHeader out;
    out.data_start = 8 + n;
    const uint64_t data_size = size - out.data_start;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const json& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object()) throw bad(source, "__metadata__", "an object of strings", v.type_name());
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string()) throw bad(source, "__metadata__." + m.key(), "a string", m.value().type_name());
                out.metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor '" + name + "'";
        if (!v.is_object()) throw bad(source, where, "an object with dtype, shape, data_offsets", v.type_name());
        TensorInfo t;
        t.name = name;
        auto dt = v.find("dtype");
        if (dt == v.end() || !dt->is_string()) throw bad(source, where + " dtype", "a dtype string", dt == v.end() ? "nothing" : dt->type_name());
        auto parsed = parse_dtype(dt->get<std::string>());
        if (!parsed) {
            throw bad(source, where + " dtype", "one of BOOL U8 I8 I16 I32 I64 F16 BF16 F32 F64",
                      "'" + dt->get<std::string>() + "'");
        }
        t.dtype = *parsed;
        auto sh = v.find("shape");
        if (sh == v.end() || !sh->is_array()) throw bad(source, where + " shape", "an array of integers", sh == v.end() ? "nothing" : sh->type_name());
        for (const auto& d : *sh) {
            if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad(source, where + " shape", "non-negative integers", d.dump());
            t.shape.push_back(d.get<int64_t>());
        }
        auto off = v.find("data_offsets");
        if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned()) {
            throw bad(source, where + " data_offsets", "[begin, end] non-negative integers", off == v.end() ? "nothing" : off->dump());
        }
        t.begin = (*off)[0].get<uint64_t>();
        t.end = (*off)[1].get<uint64_t>();
        if (t.begin > t.end) {
            throw bad(source, where + " data_offsets", "begin <= end", "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]");
        }
        if (t.end > data_size) {
            throw bad(source, where + " data_offsets", "end <= data size " + std::to_string(data_size),
                      "end " + std::to_string(t.end) + " (file truncated or offsets out of bounds)");
        }
        auto span = span_bytes(t.shape, dtype_size(t.dtype));
        if (!span || *span != t.nbytes()) {
            throw bad(source, where, "shape " + shape_str(t.shape) + " x " + dtype_name(t.dtype) + " = " +
                                         (span ? std::to_string(*span) : std::string("overflow")) + " bytes",
                      std::to_string(t.nbytes()) + " bytes in data_offsets");
        }
        out.tensors.push_back(std::move(t));
    }
    // Overlap check on the offsets sorted by begin; zero-sized tensors never overlap.
    std::vector<const TensorInfo*> by_begin;
    for (const auto& t : out.tensors) if (t.nbytes() > 0) by_begin.push_back(&t);
    std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < by_begin.size(); ++i) {
        if (by_begin[i]->begin < by_begin[i - 1]->end) {
            throw bad(source, "tensor '" + by_begin[i]->name + "' data_offsets",
                      "no overlap with tensor '" + by_begin[i - 1]->name + "' (ends at " + std::to_string(by_begin[i - 1]->end) + ")",
                      "begin " + std::to_string(by_begin[i]->begin));
        }
    }
    return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
    header_ = parse_safetensors_header(file_.data(), file_.size(), path);
    for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

void SafetensorsFile::allow_private_writes() {
    if (file_.size() == 0) return;
    // The mapping is MAP_PRIVATE, so PROT_WRITE is allowed even though the file was opened
    // read-only; mmap returned a page-aligned start.
    if (::mprotect(const_cast<uint8_t*>(file_.data()), file_.size(), PROT_READ | PROT_WRITE) != 0) {
        throw IoError(ErrorInfo{file_.path()}.msg(std::string("cannot make the mapping copy-on-write: ") + std::strerror(errno)));
    }
}

void Checkpoint::allow_private_writes() {
    for (auto& s : shards_) s->allow_private_writes();
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Checkpoint Checkpoint::open(const std::string& path) {
    Checkpoint ck;
    ck.source_ = path;
    fs::path p(path);
    std::string index_path;
    std::vector<std::string> files;
    if (fs::is_directory(p)) {
        for (const char* name : {"model.safetensors.index.json", "model.safetensors", "adapter_model.safetensors"}) {
            if (fs::exists(p / name)) {
                if (std::string(name).find(".json") != std::string::npos) index_path = (p / name).string();
                else files.push_back((p / name).string());
                break;
            }
        }
        if (index_path.empty() && files.empty()) {
            throw IoError(ErrorInfo{path}.msg("no safetensors checkpoint in this folder")
                              .expected("model.safetensors or model.safetensors.index.json")
                              .hint("pdsd reads Hugging Face safetensors; convert .bin checkpoints with transformers' save_pretrained"));
        }
    } else if (p.extension() == ".json") {
        index_path = path;
    } else {
        files.push_back(path);
    }
    if (!index_path.empty()) {
        json index = read_json_file(index_path);
        auto wm = index.find("weight_map");
        if (wm == index.end() || !wm->is_object()) {
            throw FormatError(ErrorInfo{index_path}.at("weight_map").expected("an object {tensor: shard file}")
                                  .found(wm == index.end() ? "nothing" : wm->type_name()));
        }
        std::map<std::string, std::vector<std::string>> wanted;  // shard -> tensor names
        for (auto it = wm->begin(); it != wm->end(); ++it) {
            if (!it.value().is_string()) throw FormatError(ErrorInfo{index_path}.at("weight_map." + it.key()).expected("a file name"));
            wanted[it.value().get<std::string>()].push_back(it.key());
        }
        fs::path dir = fs::path(index_path).parent_path();
        for (const auto& [shard, names] : wanted) {
            auto file = std::make_unique<SafetensorsFile>((dir / shard).string());
            for (const auto& n : names) {
                const TensorInfo* t = file->find(n);
                if (!t) {
                    throw FormatError(ErrorInfo{index_path}.at("weight_map." + n)
                                          .msg("tensor listed in the index is missing from " + shard)
                                          .hint("the checkpoint is incomplete; re-download or re-export it"));
                }
                ck.where_[n] = {ck.shards_.size(), t};
            }
            ck.shards_.push_back(std::move(file));
        }
    } else {
        for (const auto& f : files) {
            auto file = std::make_unique<SafetensorsFile>(f);
            for (const auto& t : file->tensors()) ck.where_[t.name] = {ck.shards_.size(), &t};
            ck.shards_.push_back(std::move(file));
        }
    }
    return ck;
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& [n, _] : where_) out.push_back(n);
    std::sort(out.begin(), out.end());
    return out;
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
    auto it = where_.find(name);
    if (it == where_.end()) throw IoError(ErrorInfo{source_}.at("tensor '" + name + "'").msg("not in the checkpoint"));
    return *it->second.second;
}

const uint8_t* Checkpoint::data(const std::string& name) const {
    const auto& [shard, t] = where_.at(info(name).name);
    return shards_[shard]->data(*t);
}

const std::string& Checkpoint::file_of(const std::string& name) const {
    info(name);
    return shards_[where_.at(name).first]->path();
}

std::string make_safetensors_header(const std::vector<TensorView>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t off = 0;
    for (const auto& t : tensors) {
        auto span = span_bytes(t.shape, dtype_size(t.dtype));
        if (!span || *span != t.nbytes) {
            throw ShapeError(ErrorInfo{}.at("tensor '" + t.name + "'")
                                 .expected(std::to_string(span.value_or(0)) + " bytes for shape " + shape_str(t.shape))
                                 .found(std::to_string(t.nbytes) + " bytes"));
        }
        header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
        off += t.nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
    std::string out(8, '\0');
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + text;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::string header = make_safetensors_header(tensors, metadata);
    AtomicFileWriter w(path);
    w.write(header);
    for (const auto& t : tensors) w.write(t.data, t.nbytes);
    w.commit();
}

std::vector<std::string> write_sharded(const std::string& dir, const std::string& stem,
                                       const std::vector<TensorView>& tensors, uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata) {
    return write_sharded_lazy(dir, stem, tensors, max_shard_bytes,
                              [&](size_t i) { return tensors[i]; }, metadata);
}

std::vector<std::string> write_sharded_lazy(const std::string& dir, const std::string& stem,
                                            const std::vector<TensorView>& specs, uint64_t max_shard_bytes,
                                            const TensorProducer& produce,
                                            const std::map<std::string, std::string>& metadata) {
    // Shard layout: indices into `specs`, in order.
    std::vector<std::vector<size_t>> shards(1);
    uint64_t current = 0, total = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
        const auto& t = specs[i];
        if (max_shard_bytes > 0 && !shards.back().empty() && current + t.nbytes > max_shard_bytes) {
            shards.emplace_back();
            current = 0;
        }
        shards.back().push_back(i);
        current += t.nbytes;
        total += t.nbytes;
    }
    fs::create_directories(dir);
    auto write_one = [&](const std::string& path, const std::vector<size_t>& idx) {
        std::vector<TensorView> views;
        views.reserve(idx.size());
        for (size_t i : idx) views.push_back(specs[i]);
        std::string header = make_safetensors_header(views, metadata);  // validates nbytes vs shape
        AtomicFileWriter w(path);
        w.write(header);
        for (size_t i : idx) {
            TensorView v = produce(i);
            const auto& s = specs[i];
            if (v.name != s.name || v.dtype != s.dtype || v.shape != s.shape || v.nbytes != s.nbytes ||
                (v.nbytes > 0 && v.data == nullptr)) {
                throw ShapeError(ErrorInfo{path}.at("tensor '" + s.name + "'")
                                     .expected(std::string(dtype_name(s.dtype)) + " " + shape_str(s.shape) + " as planned")
                                     .found("'" + v.name + "' " + dtype_name(v.dtype) + " " + shape_str(v.shape) + ", " +
                                            std::to_string(v.nbytes) + " bytes"));
            }
            w.write(v.data, v.nbytes);
        }
        w.commit();
    };
    std::vector<std::string> written;
    if (shards.size() == 1) {
        std::string name = stem + ".safetensors";
        write_one((fs::path(dir) / name).string(), shards[0]);
        written.push_back(name);
        return written;
    }
    json weight_map = json::object();
    char buf[64];
    for (size_t i = 0; i < shards.size(); ++i) {
        std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
        std::string name = stem + buf;
        write_one((fs::path(dir) / name).string(), shards[i]);
        for (size_t k : shards[i]) weight_map[specs[k].name] = name;
        written.push_back(name);
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::string index_name = stem + ".safetensors.index.json";
    write_file_atomic((fs::path(dir) / index_name).string(), index.dump(2) + "\n");
    written.push_back(index_name);
    return written;
}

}  // namespace pdsd
