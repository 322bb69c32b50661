// safetensors: the Hugging Face checkpoint format, read and written without libtorch.
//
// File layout: u64 little-endian N | N bytes of JSON header | data bytes.
// Header: {"__metadata__": {str: str}, "<name>": {"dtype": "BF16", "shape": [r, c],
//          "data_offsets": [begin, end]}, ...}; offsets are relative to the data start.
//
// Reading mmaps the file and validates the whole header before anything uses it
// (length, JSON, dtype names, shape x dtype size == byte span, offsets in bounds,
// no overlaps); a bad file is a FormatError naming the file and tensor, never a crash.
// Tensor bytes are returned as pointers into the mapping (zero copy); model/weights.h
// wraps them as torch tensors.
//
// Sharded checkpoints: `model.safetensors.index.json` = {"metadata": {"total_size": bytes},
// "weight_map": {name: "model-00001-of-00002.safetensors"}}; Checkpoint opens either form.
#pragma once

#include "pdsd/core/file_util.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace pdsd {

enum class DType { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64 };

size_t dtype_size(DType dt);                 // bytes per element
const char* dtype_name(DType dt);            // "BF16"...
std::optional<DType> parse_dtype(const std::string& name);

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets relative to the data section
    uint64_t end = 0;

    uint64_t numel() const;
    uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
    std::vector<TensorInfo> tensors;                 // in header order
    std::map<std::string, std::string> metadata;     // "__metadata__"
    uint64_t data_start = 0;                         // 8 + header length
};

// Parses and validates the header of a complete safetensors buffer of `size` bytes.
// `source` names the file in errors. Throws FormatError.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source);

// One mmapped .safetensors file.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string& path);  // throws IoError / FormatError

    const std::string& path() const { return file_.path(); }
    const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
    const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
    const TensorInfo* find(const std::string& name) const;   // nullptr when absent
    const uint8_t* data(const TensorInfo& t) const { return file_.data() + header_.data_start + t.begin; }
    // Makes the mapping writable copy-on-write (mprotect PROT_READ|PROT_WRITE on the
    // MAP_PRIVATE mapping): a write to a tensor's bytes then copies the touched 4 KiB pages
    // privately instead of faulting; the file on disk never changes. Used when model
    // parameters are views of the mapping (model/loader.h). Throws IoError on failure.
    void allow_private_writes();

private:
    MappedFile file_;
    SafetensorsHeader header_;
    std::unordered_map<std::string, size_t> index_;
};

// A checkpoint: one .safetensors file, or the shards of a model.safetensors.index.json.
class Checkpoint {
public:
    // `path` is a .safetensors file, an index .json, or a folder holding either
    // model.safetensors.index.json or model.safetensors (or adapter_model.safetensors).
    static Checkpoint open(const std::string& path);

    std::vector<std::string> names() const;           // sorted
    bool contains(const std::string& name) const { return where_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const;     // throws IoError if absent
    const uint8_t* data(const std::string& name) const;
    const std::string& file_of(const std::string& name) const;  // which shard holds it
    const std::string& source() const { return source_; }
    // SafetensorsFile::allow_private_writes() on every shard.
    void allow_private_writes();

private:
    std::string source_;
    std::vector<std::unique_ptr<SafetensorsFile>> shards_;
    std::unordered_map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

// A tensor to write: contiguous little-endian bytes in row-major order.
struct TensorView {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const void* data = nullptr;
    uint64_t nbytes = 0;
};

// Serialized header (with 8-byte length prefix and space padding to 8-byte alignment)
// for `tensors` laid out back to back in the given order.
std::string make_safetensors_header(const std::vector<TensorView>& tensors,
                                    const std::map<std::string, std::string>& metadata);

// Writes one .safetensors file atomically. Throws ShapeError when a view's nbytes
// does not equal numel x dtype size.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes `tensors` into `dir` as `<stem>.safetensors` when they fit in one shard of at
// most `max_shard_bytes` (0 = unlimited), else as `<stem>-0000i-of-0000N.safetensors`
// plus `<stem>.safetensors.index.json` (weight_map + metadata.total_size). Tensors keep
// their order; a tensor larger than the limit gets a shard of its own (as HF does).
// Returns the file names written (shards, then the index if any).
std::vector<std::string> write_sharded(const std::string& dir, const std::string& stem,
                                       const std::vector<TensorView>& tensors, uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Lazy form of write_sharded for outputs larger than memory: `specs` gives each tensor's
// name, dtype, shape and nbytes (their `data` is ignored) and fixes the shard layout up
// front; `produce(i)` is called exactly once per tensor, in order, right before its bytes
// are written, and returns a view that must stay valid until the next call. So at most
// one produced tensor is alive at a time. A view whose name, dtype, shape or nbytes differs
// from specs[i] throws ShapeError.
using TensorProducer = std::function<TensorView(size_t index)>;
std::vector<std::string> write_sharded_lazy(const std::string& dir, const std::string& stem,
                                            const std::vector<TensorView>& specs, uint64_t max_shard_bytes,
                                            const TensorProducer& produce,
                                            const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace pdsd
