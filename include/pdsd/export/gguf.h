// GGUF export: a Hugging Face Qwen2 folder (safetensors + config.json + tokenizer files)
// written as one GGUF v3 file that llama.cpp loads (architecture "qwen2"). Torch-free.
//
// File layout (little-endian), as llama.cpp's gguf-py writes it:
//   u32 magic 0x46554747 ("GGUF") | u32 version 3 | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }      string = u64 length + UTF-8 bytes
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   zero padding to `alignment` (general.alignment, 32) | tensor data, each tensor padded to 32.
// ne[0] is the innermost (contiguous) dimension: a HF weight [out, in] has ne = {in, out};
// the bytes are the same row-major order. Offsets are relative to the data section.
//
// Tensor types: 1D tensors (norms, biases) always F32, as convert_hf_to_gguf.py does. 2D
// weights: bf16 / f16 / q8_0 write every weight in that type (convert_hf_to_gguf.py; a Q8_0
// weight whose row length is not a multiple of 32 falls back to F16). The llama-quantize file
// types q4_0, q5_0, q4_k_m, q5_k_m, q6_k mix types per tensor as llama.cpp's quantizer does
// (gguf_tensor_type below); their blocks are bit-exact with ggml's reference quantizers
// (block layouts in src/export/gguf_quants.cpp), so the file equals `llama-quantize` run on
// an F32/BF16 GGUF of the same weights without an importance matrix.
//
// Memory: tensors are read from the mmapped shards and converted in chunks of rows, so the
// writer holds a few MB beyond the page cache; pages of a tensor are dropped once written.
// The output is written to a temp file beside `out_path` and renamed when complete.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pdsd {
class MappedFile;
}

namespace pdsd::exporter {

// File type (llama.cpp's LLAMA_FTYPE_*): the type of the 2D weights, or the quantizer's mix.
enum class GgufType { BF16, F16, Q8_0, Q4_0, Q5_0, Q4_K_M, Q5_K_M, Q6_K };
// "bf16" | "f16" | "fp16" | "q8_0" | "q4_0" | "q5_0" | "q4_k_m" | "q5_k_m" | "q6_k" (any case);
// UsageError otherwise.
GgufType parse_gguf_type(const std::string& name);
const char* gguf_type_name(GgufType t);              // the canonical spelling above
uint32_t gguf_file_type(GgufType t);                 // general.file_type (LLAMA_FTYPE_MOSTLY_*)

// ggml tensor type ids (ggml.h / gguf-py GGMLQuantizationType) used here.
enum GgmlType : uint32_t {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8,
    GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_BF16 = 30
};
// GGUF metadata value types (gguf-py GGUFValueType).
enum GgufValueType : uint32_t {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12
};
// tokenizer.ggml.token_type values (gguf-py TokenType).
enum GgufTokenType : int32_t { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4,
                               TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

constexpr int64_t kQ8_0Block = 32;       // values per Q8_0 block
constexpr int64_t kQ8_0BlockBytes = 34;  // fp16 scale + 32 int8

// Scalar conversions (round to nearest even; NaN stays NaN, overflow gives inf).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

// Q8_0 of n values (n a multiple of 32) into n / 32 blocks of 34 bytes, bit-exact with
// ggml's quantize_row_q8_0_ref; and back. |x - deq(q(x))| <= d/2 + |x| * 2^-11 per value, d the
// block's fp16 scale (the fp16 rounding of d moves q * d by up to 2^-11 relative).
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* in, int64_t n, float* out);

// Block formats (gguf_quants.cpp): values and bytes per block (1 and 4 / 2 for F32 / F16 / BF16;
// 0 bytes for a type this file does not know).
bool ggml_is_block_quant(uint32_t ggml_type);        // Q4_0 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K
int64_t ggml_block_values(uint32_t ggml_type);       // 32 or 256 (K-quants)
int64_t ggml_block_bytes(uint32_t ggml_type);
// n values (whole blocks) into n / block blocks, bytes equal to ggml's quantize_row_<type>_ref;
// and back as ggml's dequantize_row_<type>. InternalError for a non-block type or partial block.
void quantize_blocks(uint32_t ggml_type, const float* x, int64_t n, uint8_t* out);
void dequantize_blocks(uint32_t ggml_type, const uint8_t* in, int64_t n, float* out);

// Bytes of a tensor of `numel` values (ne0 a multiple of the type's block).
uint64_t ggml_nbytes(uint32_t ggml_type, uint64_t numel);
const char* ggml_type_name(uint32_t ggml_type);      // "Q4_K" ...

// The ggml type of GGUF tensor `name` (ggml shape ne) in a file of type t, by llama.cpp's
// quantizer rules (llama_tensor_get_type, src/llama-quant.cpp) for a Qwen2 model of n_layers
// blocks; `tied`: the file has no output.weight (token_embd doubles as the output layer).
//   1D tensors: F32.  bf16 / f16 / q8_0: that type for every 2D weight.
//   Mixes (default Q4_0, Q5_0, Q4_K, Q5_K or Q6_K): output.weight, or token_embd when tied,
//   gets Q6_K (Q8_0 when ne0 is not a multiple of the default's block);
//   *_K_M: attn_v and ffn_down of the use_more_bits layers (first and last eighth, every third
//   between) get Q6_K.
// Row-length fallback (ne0 not a multiple of the block): Q4_K -> Q5_0, Q5_K -> Q5_1,
// Q6_K -> Q8_0, and F16 when even 32 does not divide ne0 (llama.cpp stops there for Q4_0 /
// Q5_0; pdsd writes F16 as for Q8_0).
struct GgufTensorType {
    uint32_t type = GGML_F32;     // written
    uint32_t wanted = GGML_F32;   // before the row-length fallback (== type without one)
};
GgufTensorType gguf_tensor_type(GgufType t, const std::string& name, const std::vector<uint64_t>& ne, int64_t n_layers,
                                bool tied);

struct GgufOptions {
    GgufType type = GgufType::BF16;
    std::string name;            // general.name (default: the folder's name)
    uint32_t alignment = 32;     // general.alignment
};

struct GgufReport {
    std::string path;
    int64_t tensors = 0;
    int64_t kv = 0;
    int64_t n_vocab = 0;               // token list length (= embedding rows)
    int64_t f16_fallbacks = 0;         // 2D weights written as F16 as no block divides their rows
    int64_t fallbacks = 0;             // tensors whose row length forced another type (F16 included)
    std::map<std::string, int64_t> type_counts;  // ggml type name -> tensors of that type
    uint64_t file_bytes = 0;
    double seconds = 0;
};

// Converts the HF Qwen2 folder `hf_dir` into `out_path`. Needs config.json (model_type
// qwen2), safetensors weights and tokenizer.json (tokenizer_config.json optional: special
// tokens, chat template). Throws FormatError / ConfigError / IoError / ShapeError; on error
// no file is left at `out_path`.
GgufReport write_gguf(const std::string& hf_dir, const std::string& out_path, const GgufOptions& options);

// The llama.cpp tensor name of a HF Qwen2 parameter ("model.layers.3.mlp.up_proj.weight" ->
// "blk.3.ffn_up.weight"); empty for tensors llama.cpp does not use (rotary inv_freq).
// Throws FormatError for an unknown name.
std::string gguf_tensor_name(const std::string& hf_name);

// A small GGUF reader (tests, self-check): parses and validates the header of a whole file.
struct GgufTensor {
    std::string name;
    std::vector<uint64_t> ne;   // ggml order: ne[0] innermost
    uint32_t type = 0;
    uint64_t offset = 0;        // relative to the data section
    uint64_t numel() const;
    uint64_t nbytes() const;
};
struct GgufKv {
    uint32_t type = 0;          // GgufValueType
    uint32_t elem_type = 0;     // for arrays
    nlohmann::json value;       // numbers, bool, string, or array of them
};
class GgufFile {
public:
    explicit GgufFile(const std::string& path);  // throws IoError / FormatError
    ~GgufFile();
    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    const std::map<std::string, GgufKv>& kv() const { return kv_; }
    std::vector<std::string> kv_order() const { return kv_order_; }   // keys in file order
    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* find(const std::string& name) const;
    const nlohmann::json& value(const std::string& key) const;         // throws FormatError if absent
    uint64_t data_start() const { return data_start_; }
    const uint8_t* data(const GgufTensor& t) const;
    std::vector<float> to_float(const GgufTensor& t) const;           // row-major values

private:
    std::unique_ptr<MappedFile> file_;
    uint32_t version_ = 0;
    uint32_t alignment_ = 32;
    std::map<std::string, GgufKv> kv_;
    std::vector<std::string> kv_order_;
    std::vector<GgufTensor> tensors_;
    uint64_t data_start_ = 0;
};

}  // namespace pdsd::exporter
