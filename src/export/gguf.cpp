#include "pdsd/export/gguf.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <regex>

#include <sys/mman.h>
#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace pdsd::exporter {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kQuantVersion = 2;        // general.quantization_version (GGML_QNT_VERSION)

uint32_t f2u(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float u2f(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Drops a read-only mapping range from this process (pages stay in the page cache).
void drop_pages(const void* p, size_t n) {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
    uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

// Little-endian serialisation of header items (x86/ARM hosts are little-endian).
struct Buf {
    std::string s;
    template <class T>
    void pod(T v) { s.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
    void str(const std::string& v) {
        pod<uint64_t>(v.size());
        s += v;
    }
};

// One metadata entry, serialised when added (keys kept in insertion order).
struct KvWriter {
    Buf buf;
    int64_t count = 0;
    void key(const std::string& k, uint32_t type) {
        buf.str(k);
        buf.pod<uint32_t>(type);
        ++count;
    }
    void u32(const std::string& k, uint32_t v) { key(k, GGUF_U32); buf.pod(v); }
    void f32(const std::string& k, float v) { key(k, GGUF_F32); buf.pod(v); }
    void boolean(const std::string& k, bool v) { key(k, GGUF_BOOL); buf.pod<uint8_t>(v ? 1 : 0); }
    void str(const std::string& k, const std::string& v) { key(k, GGUF_STRING); buf.str(v); }
    void strs(const std::string& k, const std::vector<std::string>& v) {
        key(k, GGUF_ARRAY);
        buf.pod<uint32_t>(GGUF_STRING);
        buf.pod<uint64_t>(v.size());
        for (const auto& x : v) buf.str(x);
    }
    void i32s(const std::string& k, const std::vector<int32_t>& v) {
        key(k, GGUF_ARRAY);
        buf.pod<uint32_t>(GGUF_I32);
        buf.pod<uint64_t>(v.size());
        buf.s.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    }
};

uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Value of a source element as float.
float load_elem(DType dt, const uint8_t* p, uint64_t i) {
    switch (dt) {
        case DType::F32: { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
        case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return bf16_to_float(h); }
        case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return half_to_float(h); }
        case DType::F64: { double d; std::memcpy(&d, p + 8 * i, 8); return static_cast<float>(d); }
        default: return 0.f;
    }
}

// Planned output tensor.
struct Plan {
    std::string hf_name;
    std::string name;              // llama.cpp name
    std::vector<uint64_t> ne;      // ggml order
    uint32_t type = GGML_F32;
    uint64_t offset = 0;
    uint64_t nbytes = 0;
};

// Writes the plan's data converted from the source tensor, in chunks of whole rows.
void write_tensor(AtomicFileWriter& w, const Plan& p, const TensorInfo& ti, const uint8_t* src) {
    uint64_t n = ti.numel();
    uint64_t row = p.ne.empty() ? 1 : p.ne[0];
    // Same bytes: copy straight from the mapping.
    if ((p.type == GGML_BF16 && ti.dtype == DType::BF16) || (p.type == GGML_F16 && ti.dtype == DType::F16) ||
        (p.type == GGML_F32 && ti.dtype == DType::F32)) {
        w.write(src, ti.nbytes());
        return;
    }
    uint64_t rows_per_chunk = std::max<uint64_t>(1, (1u << 20) / std::max<uint64_t>(row, 1));
    std::vector<float> f;
    std::vector<uint8_t> out;
    for (uint64_t r0 = 0; r0 * row < n; r0 += rows_per_chunk) {
        uint64_t b = r0 * row, e = std::min(n, (r0 + rows_per_chunk) * row);
        f.resize(e - b);
        for (uint64_t i = b; i < e; ++i) f[i - b] = load_elem(ti.dtype, src, i);
        uint64_t m = e - b;
        switch (p.type) {
            case GGML_F32:
                w.write(f.data(), m * 4);
                break;
            case GGML_F16: {
                out.resize(m * 2);
                for (uint64_t i = 0; i < m; ++i) {
                    uint16_t h = float_to_half(f[i]);
                    std::memcpy(out.data() + 2 * i, &h, 2);
                }
                w.write(out.data(), out.size());
                break;
            }
            case GGML_BF16: {
                out.resize(m * 2);
                for (uint64_t i = 0; i < m; ++i) {
                    uint16_t h = float_to_bf16(f[i]);
                    std::memcpy(out.data() + 2 * i, &h, 2);
                }
                w.write(out.data(), out.size());
                break;
            }
            default:  // block formats: m is whole rows, a row whole blocks
                out.resize(ggml_nbytes(p.type, m));
                quantize_blocks(p.type, f.data(), static_cast<int64_t>(m), out.data());
                w.write(out.data(), out.size());
                break;
        }
    }
}

// Token text of a tokenizer_config special-token entry: "..." or {"content": "..."}.
std::optional<std::string> token_content(const json& tc, const std::string& key) {
    if (!tc.contains(key)) return std::nullopt;
    const json& v = tc[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return std::nullopt;
}

std::optional<int64_t> json_id(const json& j, const std::string& key) {
    if (!j.contains(key)) return std::nullopt;
    const json& v = j[key];
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    return std::nullopt;
}

// Added tokens that look like control tokens (convert_hf_to_gguf.py does_token_look_special).
bool looks_special(const std::string& t) {
    auto starts = [&](const char* p) { return t.rfind(p, 0) == 0; };
    auto ends = [&](const char* p) {
        size_t n = std::strlen(p);
        return t.size() >= n && t.compare(t.size() - n, n, p) == 0;
    };
    return (starts("<|") && ends("|>")) || t == "<s>" || t == "</s>" || t == "<pad>" || t == "<unk>" || t == "<mask>" ||
           t == "<cls>" || t == "<sep>" || t == "<eos>" || t == "<bos>" || t == "<eot>";
}

}  // namespace

namespace {
struct TypeSpelling {
    GgufType type;
    const char* name;
    uint32_t file_type;   // LLAMA_FTYPE_MOSTLY_*
    uint32_t base;        // ggml type of the mix's ordinary 2D weight
};
constexpr TypeSpelling kTypes[] = {
    {GgufType::BF16, "bf16", 32, GGML_BF16},    {GgufType::F16, "f16", 1, GGML_F16},
    {GgufType::Q8_0, "q8_0", 7, GGML_Q8_0},     {GgufType::Q4_0, "q4_0", 2, GGML_Q4_0},
    {GgufType::Q5_0, "q5_0", 8, GGML_Q5_0},     {GgufType::Q4_K_M, "q4_k_m", 15, GGML_Q4_K},
    {GgufType::Q5_K_M, "q5_k_m", 17, GGML_Q5_K}, {GgufType::Q6_K, "q6_k", 18, GGML_Q6_K},
};
const TypeSpelling& spelling(GgufType t) {
    for (const auto& s : kTypes) if (s.type == t) return s;
    throw InternalError(ErrorInfo{}.msg("unknown GgufType"));
}
}  // namespace

GgufType parse_gguf_type(const std::string& name) {
    std::string s = name;
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (s == "bfloat16") s = "bf16";
    if (s == "fp16" || s == "float16") s = "f16";
    if (s == "q8") s = "q8_0";
    for (const auto& t : kTypes) if (s == t.name) return t.type;
    throw UsageError(ErrorInfo{}.at("gguf_type").expected("bf16, f16, q8_0, q4_0, q5_0, q4_k_m, q5_k_m or q6_k").found(name)
                         .hint("q4_k_m is what `ollama pull` gives by default"));
}

const char* gguf_type_name(GgufType t) { return spelling(t).name; }
uint32_t gguf_file_type(GgufType t) { return spelling(t).file_type; }

const char* ggml_type_name(uint32_t t) {
    switch (t) {
        case GGML_F32: return "F32";
        case GGML_F16: return "F16";
        case GGML_Q4_0: return "Q4_0";
        case GGML_Q5_0: return "Q5_0";
        case GGML_Q5_1: return "Q5_1";
        case GGML_Q8_0: return "Q8_0";
        case GGML_Q4_K: return "Q4_K";
        case GGML_Q5_K: return "Q5_K";
        case GGML_Q6_K: return "Q6_K";
        case GGML_BF16: return "BF16";
        default: return "unknown";
    }
}

uint64_t ggml_nbytes(uint32_t t, uint64_t numel) {
    uint64_t per = static_cast<uint64_t>(ggml_block_values(t));
    return numel / per * static_cast<uint64_t>(ggml_block_bytes(t));
}

namespace {
// llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// Layer of "blk.N.xxx", or -1.
int64_t block_index(const std::string& name) {
    if (name.rfind("blk.", 0) != 0) return -1;
    return std::strtoll(name.c_str() + 4, nullptr, 10);
}

// llama.cpp's tensor_type_fallback for a row of ne0 values.
uint32_t row_fallback(uint32_t t, uint64_t ne0) {
    if (ne0 % static_cast<uint64_t>(ggml_block_values(t)) == 0) return t;
    uint32_t f = t == GGML_Q4_K ? GGML_Q5_0 : t == GGML_Q5_K ? GGML_Q5_1 : t == GGML_Q6_K ? GGML_Q8_0 : GGML_F16;
    return ne0 % static_cast<uint64_t>(ggml_block_values(f)) == 0 ? f : GGML_F16;
}
}  // namespace

GgufTensorType gguf_tensor_type(GgufType t, const std::string& name, const std::vector<uint64_t>& ne, int64_t n_layers,
                                bool tied) {
    GgufTensorType r;
    if (ne.size() < 2) return r;  // norms and biases stay F32
    const TypeSpelling& sp = spelling(t);
    uint32_t want = sp.base;
    const bool mix = t != GgufType::BF16 && t != GgufType::F16 && t != GgufType::Q8_0;
    if (mix) {
        const bool km = t == GgufType::Q4_K_M || t == GgufType::Q5_K_M;
        const auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
        if (name == "output.weight" || (tied && name == "token_embd.weight")) {
            want = ne[0] % static_cast<uint64_t>(ggml_block_values(sp.base)) != 0 ? GGML_Q8_0 : GGML_Q6_K;
        } else if (km && (has("attn_v.weight") || has("ffn_down")) && use_more_bits(block_index(name), n_layers)) {
            want = GGML_Q6_K;
        }
    }
    r.wanted = want;
    r.type = (want == GGML_BF16 || want == GGML_F16) ? want : row_fallback(want, ne[0]);
    return r;
}

uint16_t float_to_half(float f) {
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));  // inf / nan
    if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {
        // Result is subnormal (or zero): value / 2^-24 rounded to nearest even.
        if (ax < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
        float a = u2f(ax);
        float scaled = a * 16777216.0f;  // exact (power of two), < 1024
        float r = std::nearbyint(scaled);  // default rounding mode: nearest even
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
    }
    // Normal: rebias exponent (127 -> 15), round mantissa 23 -> 10 bits, nearest even.
    uint32_t m = ax + 0xc8000000u;  // exponent - 112 (in the exponent field)
    uint32_t lsb = (m >> 13) & 1u;
    m += 0x0fffu + lsb;
    return static_cast<uint16_t>(sign | (m >> 13));
}

float half_to_float(uint16_t h) {
    uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = std::ldexp(static_cast<float>(m), -24);
        return sign ? -v : v;
    }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t float_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
}

float bf16_to_float(uint16_t b) { return u2f(static_cast<uint32_t>(b) << 16); }

std::string gguf_tensor_name(const std::string& n) {
    static const std::map<std::string, std::string> top = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const std::map<std::string, std::string> layer = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (auto it = top.find(n); it != top.end()) return it->second;
    static const std::regex re(R"(model\.layers\.(\d+)\.(.+))");
    std::smatch m;
    if (std::regex_match(n, m, re)) {
        std::string rest = m[2].str();
        if (rest == "self_attn.rotary_emb.inv_freq") return "";
        if (auto it = layer.find(rest); it != layer.end()) return "blk." + m[1].str() + "." + it->second;
    }
    throw FormatError(ErrorInfo{n}.msg("no llama.cpp (qwen2) tensor for this parameter")
                          .hint("GGUF export knows Qwen2ForCausalLM parameters only"));
}

GgufReport write_gguf(const std::string& hf_dir, const std::string& out_path, const GgufOptions& o) {
    auto t0 = std::chrono::steady_clock::now();
    fs::path dir(hf_dir);
    json cfg_json = read_json_file((dir / "config.json").string());
    Qwen2Config cfg = load_qwen2_config(hf_dir);
    std::string model_type = cfg_json.value("model_type", "");
    if (model_type != "qwen2") {
        throw ConfigError(ErrorInfo{(dir / "config.json").string()}.at("model_type").expected("qwen2").found(model_type)
                              .hint("GGUF export writes llama.cpp's qwen2 architecture only"));
    }
    if (!fs::exists(dir / "tokenizer.json")) {
        throw IoError(ErrorInfo{hf_dir}.msg("tokenizer.json not found: a GGUF file carries the tokenizer")
                          .hint("copy the base model's tokenizer.json and tokenizer_config.json into the folder "
                                "(`pdsd model init --tokenizer DIR` does it for random checkpoints)"));
    }
    Checkpoint ck = Checkpoint::open(hf_dir);

    // ---- tensors ----
    if (!ck.contains("model.embed_tokens.weight")) {
        throw FormatError(ErrorInfo{ck.source()}.msg("model.embed_tokens.weight is missing"));
    }
    const int64_t n_vocab = ck.info("model.embed_tokens.weight").shape.at(0);
    const bool write_output = ck.contains("lm_head.weight") && !cfg.tie_word_embeddings;
    if (!ck.contains("lm_head.weight") && !cfg.tie_word_embeddings) {
        throw FormatError(ErrorInfo{ck.source()}.msg("lm_head.weight is missing and tie_word_embeddings is false"));
    }
    // Order: token_embd, blocks in layer order (HF order within), output_norm, output.
    std::vector<std::string> names = ck.names();
    auto rank = [](const std::string& n) -> std::pair<int64_t, std::string> {
        if (n == "model.embed_tokens.weight") return {-1, n};
        if (n == "model.norm.weight") return {1 << 30, n};
        if (n == "lm_head.weight") return {(1 << 30) + 1, n};
        static const std::regex re(R"(model\.layers\.(\d+)\..+)");
        std::smatch m;
        if (std::regex_match(n, m, re)) return {std::stoll(m[1].str()), n};
        return {(1 << 30) + 2, n};
    };
    std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });

    std::vector<Plan> plans;
    int64_t f16_fallbacks = 0, fallbacks = 0;
    std::map<std::string, int64_t> type_counts;
    uint64_t offset = 0;
    for (const auto& hf : names) {
        if (hf == "lm_head.weight" && !write_output) continue;
        std::string gn = gguf_tensor_name(hf);
        if (gn.empty()) continue;
        const TensorInfo& ti = ck.info(hf);
        if (ti.dtype != DType::F32 && ti.dtype != DType::BF16 && ti.dtype != DType::F16 && ti.dtype != DType::F64) {
            throw FormatError(ErrorInfo{ck.file_of(hf)}.at("tensor '" + hf + "'").expected("a floating-point tensor")
                                  .found(dtype_name(ti.dtype)));
        }
        if (ti.shape.empty() || ti.shape.size() > 2) {
            throw ShapeError(ErrorInfo{ck.file_of(hf)}.at("tensor '" + hf + "'").expected("1 or 2 dimensions"));
        }
        Plan p;
        p.hf_name = hf;
        p.name = gn;
        for (auto it = ti.shape.rbegin(); it != ti.shape.rend(); ++it) p.ne.push_back(static_cast<uint64_t>(*it));
        GgufTensorType tt = gguf_tensor_type(o.type, gn, p.ne, cfg.num_hidden_layers, !write_output);
        p.type = tt.type;
        if (tt.type != tt.wanted) {
            ++fallbacks;
            if (tt.type == GGML_F16) ++f16_fallbacks;
            log::debug("gguf", log::cat(gn, ": row length ", p.ne[0], " is not a multiple of ", ggml_block_values(tt.wanted),
                                       " (", ggml_type_name(tt.wanted), "), written as ", ggml_type_name(tt.type)));
        }
        ++type_counts[ggml_type_name(p.type)];
        p.nbytes = ggml_nbytes(p.type, ti.numel());
        p.offset = offset;
        offset += pad_to(p.nbytes, o.alignment);
        plans.push_back(std::move(p));
    }

    // ---- tokenizer ----
    json tok = read_json_file((dir / "tokenizer.json").string());
    json tc = fs::exists(dir / "tokenizer_config.json") ? read_json_file((dir / "tokenizer_config.json").string()) : json::object();
    if (!tok.contains("model") || tok["model"].value("type", "BPE") != "BPE" || !tok["model"].contains("vocab")) {
        throw FormatError(ErrorInfo{(dir / "tokenizer.json").string()}.at("model").expected("a byte-level BPE model with vocab and merges"));
    }
    std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
    std::vector<int32_t> types(static_cast<size_t>(n_vocab), 0);
    std::map<std::string, int64_t> token_id;
    auto place = [&](const std::string& t, int64_t id, int32_t type) {
        if (id < 0 || id >= n_vocab) {
            throw FormatError(ErrorInfo{(dir / "tokenizer.json").string()}.at("token '" + t + "'")
                                  .expected(log::cat("an id below the embedding's ", n_vocab, " rows")).found(std::to_string(id))
                                  .hint("the tokenizer does not belong to this model"));
        }
        tokens[static_cast<size_t>(id)] = t;
        types[static_cast<size_t>(id)] = type;
        token_id[t] = id;
    };
    for (auto it = tok["model"]["vocab"].begin(); it != tok["model"]["vocab"].end(); ++it) place(it.key(), it.value().get<int64_t>(), TOKEN_NORMAL);
    if (tok.contains("added_tokens")) {
        for (const auto& a : tok["added_tokens"]) {
            std::string c = a.value("content", "");
            bool special = a.value("special", false) || looks_special(c);
            place(c, a.value("id", int64_t{-1}), special ? TOKEN_CONTROL : TOKEN_USER_DEFINED);
        }
    }
    for (int64_t i = 0; i < n_vocab; ++i) {
        if (types[static_cast<size_t>(i)] == 0) {
            tokens[static_cast<size_t>(i)] = "[PAD" + std::to_string(i) + "]";
            types[static_cast<size_t>(i)] = TOKEN_UNUSED;
        }
    }
    std::vector<std::string> merges;
    if (tok["model"].contains("merges")) {
        for (const auto& m : tok["model"]["merges"]) {
            if (m.is_string()) {
                merges.push_back(m.get<std::string>());
            } else if (m.is_array() && m.size() == 2) {
                // New tokenizers store pairs; spaces inside a part become U+0120 (as gguf-py does).
                auto enc = [](std::string s) {
                    std::string r;
                    for (char c : s) r += (c == ' ') ? std::string("\xC4\xA0") : std::string(1, c);
                    return r;
                };
                merges.push_back(enc(m[0].get<std::string>()) + " " + enc(m[1].get<std::string>()));
            }
        }
    }
    if (merges.empty()) {
        throw FormatError(ErrorInfo{(dir / "tokenizer.json").string()}.at("model.merges").msg("no BPE merges")
                              .hint("llama.cpp needs the merges of a gpt2-style tokenizer"));
    }
    auto special_id = [&](const std::string& key, const char* cfg_key) -> std::optional<int64_t> {
        if (auto c = token_content(tc, key)) {
            if (auto it = token_id.find(*c); it != token_id.end()) return it->second;
        }
        if (auto v = json_id(cfg_json, cfg_key); v && *v >= 0 && *v < n_vocab) return v;
        return std::nullopt;
    };
    std::optional<int64_t> bos = special_id("bos_token", "bos_token_id");
    std::optional<int64_t> eos = special_id("eos_token", "eos_token_id");
    std::optional<int64_t> pad = special_id("pad_token", "pad_token_id");
    std::string chat_template;
    if (tc.contains("chat_template") && tc["chat_template"].is_string()) {
        chat_template = tc["chat_template"].get<std::string>();
    } else if (fs::exists(dir / "chat_template.jinja")) {
        chat_template = read_file((dir / "chat_template.jinja").string());
    } else if (fs::exists(dir / "chat_template.json")) {
        json j = read_json_file((dir / "chat_template.json").string());
        if (j.contains("chat_template") && j["chat_template"].is_string()) chat_template = j["chat_template"].get<std::string>();
    }

    // ---- metadata ----
    KvWriter kv;
    std::string name = o.name;
    if (name.empty()) {
        fs::path abs = fs::absolute(dir).lexically_normal();
        name = abs.filename().empty() ? abs.parent_path().filename().string() : abs.filename().string();
    }
    kv.str("general.architecture", "qwen2");
    kv.str("general.type", "model");
    kv.str("general.name", name);
    kv.u32("general.file_type", gguf_file_type(o.type));
    kv.u32("general.quantization_version", kQuantVersion);
    kv.u32("general.alignment", o.alignment);
    kv.u32("qwen2.block_count", static_cast<uint32_t>(cfg.num_hidden_layers));
    kv.u32("qwen2.context_length", static_cast<uint32_t>(cfg.max_position_embeddings));
    kv.u32("qwen2.embedding_length", static_cast<uint32_t>(cfg.hidden_size));
    kv.u32("qwen2.feed_forward_length", static_cast<uint32_t>(cfg.intermediate_size));
    kv.u32("qwen2.attention.head_count", static_cast<uint32_t>(cfg.num_attention_heads));
    kv.u32("qwen2.attention.head_count_kv", static_cast<uint32_t>(cfg.num_key_value_heads));
    kv.f32("qwen2.rope.freq_base", static_cast<float>(cfg.rope_theta));
    kv.f32("qwen2.attention.layer_norm_rms_epsilon", static_cast<float>(cfg.rms_norm_eps));
    kv.str("tokenizer.ggml.model", "gpt2");
    kv.str("tokenizer.ggml.pre", "qwen2");
    kv.strs("tokenizer.ggml.tokens", tokens);
    kv.i32s("tokenizer.ggml.token_type", types);
    kv.strs("tokenizer.ggml.merges", merges);
    if (eos) kv.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*eos));
    if (pad) kv.u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*pad));
    if (bos) kv.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*bos));
    // HF's Qwen2 tokenizer never prepends BOS; say so, else llama.cpp would add one.
    kv.boolean("tokenizer.ggml.add_bos_token", tc.value("add_bos_token", false) == true);
    if (!chat_template.empty()) kv.str("tokenizer.chat_template", chat_template);

    // ---- header ----
    Buf head;
    head.pod<uint32_t>(kGgufMagic);
    head.pod<uint32_t>(kGgufVersion);
    head.pod<uint64_t>(plans.size());
    head.pod<uint64_t>(static_cast<uint64_t>(kv.count));
    head.s += kv.buf.s;
    for (const auto& p : plans) {
        head.str(p.name);
        head.pod<uint32_t>(static_cast<uint32_t>(p.ne.size()));
        for (uint64_t d : p.ne) head.pod<uint64_t>(d);
        head.pod<uint32_t>(p.type);
        head.pod<uint64_t>(p.offset);
    }
    head.s.resize(pad_to(head.s.size(), o.alignment), '\0');

    fs::create_directories(fs::absolute(fs::path(out_path)).parent_path());
    AtomicFileWriter w(out_path);
    w.write(head.s);
    static const char zeros[64] = {};
    for (const auto& p : plans) {
        throw_if_interrupted();
        const TensorInfo& ti = ck.info(p.hf_name);
        const uint8_t* src = ck.data(p.hf_name);
        uint64_t before = w.bytes_written();
        write_tensor(w, p, ti, src);
        if (w.bytes_written() - before != p.nbytes) {
            throw InternalError(ErrorInfo{out_path}.at("tensor '" + p.name + "'").msg("wrote an unexpected number of bytes"));
        }
        uint64_t padn = pad_to(p.nbytes, o.alignment) - p.nbytes;
        if (padn) w.write(zeros, padn);
        drop_pages(src, ti.nbytes());
    }
    GgufReport r;
    r.file_bytes = w.bytes_written();
    w.commit();
    r.path = out_path;
    r.tensors = static_cast<int64_t>(plans.size());
    r.kv = kv.count;
    r.n_vocab = n_vocab;
    r.f16_fallbacks = f16_fallbacks;
    r.fallbacks = fallbacks;
    r.type_counts = type_counts;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string mix;
    for (const auto& [type, n] : type_counts) mix += log::cat(mix.empty() ? "" : ", ", n, " ", type);
    log::info("gguf", log::cat("wrote ", out_path, ": ", r.tensors, " tensors (", gguf_type_name(o.type), ": ", mix, "; ",
                               fallbacks, " row-length fallbacks), ", r.kv, " metadata keys, ", n_vocab, " tokens, ",
                               r.file_bytes, " bytes in ", r.seconds, " s"));
    return r;
}

// ---------------------------------------------------------------- reader

uint64_t GgufTensor::numel() const {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    return n;
}
uint64_t GgufTensor::nbytes() const { return ggml_nbytes(type, numel()); }

namespace {
struct Reader {
    const uint8_t* p;
    uint64_t size;
    uint64_t pos = 0;
    std::string source;
    void need(uint64_t n) {
        if (n > size || pos > size - n) {
            throw FormatError(ErrorInfo{source}.at(log::cat("byte ", pos)).msg("truncated GGUF header"));
        }
    }
    template <class T>
    T pod() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, p + pos, sizeof(T));
        pos += sizeof(T);
        return v;
    }
    std::string str() {
        uint64_t n = pod<uint64_t>();
        need(n);
        std::string s(reinterpret_cast<const char*>(p + pos), n);
        pos += n;
        return s;
    }
    json scalar(uint32_t t) {
        switch (t) {
            case GGUF_U8: return pod<uint8_t>();
            case GGUF_I8: return pod<int8_t>();
            case GGUF_U16: return pod<uint16_t>();
            case GGUF_I16: return pod<int16_t>();
            case GGUF_U32: return pod<uint32_t>();
            case GGUF_I32: return pod<int32_t>();
            case GGUF_F32: return pod<float>();
            case GGUF_BOOL: return pod<uint8_t>() != 0;
            case GGUF_STRING: return str();
            case GGUF_U64: return pod<uint64_t>();
            case GGUF_I64: return pod<int64_t>();
            case GGUF_F64: return pod<double>();
            default:
                throw FormatError(ErrorInfo{source}.at(log::cat("byte ", pos)).expected("a GGUF value type").found(std::to_string(t)));
        }
    }
};
}  // namespace

GgufFile::~GgufFile() = default;

GgufFile::GgufFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
    Reader r{file_->data(), file_->size(), 0, path};
    if (r.pod<uint32_t>() != kGgufMagic) throw FormatError(ErrorInfo{path}.msg("not a GGUF file (bad magic)"));
    version_ = r.pod<uint32_t>();
    if (version_ < 2 || version_ > 3) throw FormatError(ErrorInfo{path}.at("version").expected("2 or 3").found(std::to_string(version_)));
    uint64_t n_tensors = r.pod<uint64_t>();
    uint64_t n_kv = r.pod<uint64_t>();
    if (n_tensors > r.size || n_kv > r.size) throw FormatError(ErrorInfo{path}.msg("implausible tensor or key count"));
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = r.str();
        GgufKv v;
        v.type = r.pod<uint32_t>();
        if (v.type == GGUF_ARRAY) {
            v.elem_type = r.pod<uint32_t>();
            uint64_t n = r.pod<uint64_t>();
            if (n > r.size) throw FormatError(ErrorInfo{path}.at("key '" + key + "'").msg("implausible array length"));
            v.value = json::array();
            for (uint64_t j = 0; j < n; ++j) v.value.push_back(r.scalar(v.elem_type));
        } else {
            v.value = r.scalar(v.type);
        }
        if (kv_.count(key)) throw FormatError(ErrorInfo{path}.at("key '" + key + "'").msg("duplicate key"));
        kv_order_.push_back(key);
        kv_[key] = std::move(v);
    }
    if (auto it = kv_.find("general.alignment"); it != kv_.end()) alignment_ = it->second.value.get<uint32_t>();
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1))) throw FormatError(ErrorInfo{path}.at("general.alignment").expected("a power of two"));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensor t;
        t.name = r.str();
        uint32_t nd = r.pod<uint32_t>();
        if (nd == 0 || nd > 4) throw FormatError(ErrorInfo{path}.at("tensor '" + t.name + "'").expected("1 to 4 dimensions"));
        for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(r.pod<uint64_t>());
        t.type = r.pod<uint32_t>();
        t.offset = r.pod<uint64_t>();
        tensors_.push_back(std::move(t));
    }
    data_start_ = pad_to(r.pos, alignment_);
    for (const auto& t : tensors_) {
        uint64_t nb = t.nbytes();
        if (nb == 0 && t.numel() != 0) throw FormatError(ErrorInfo{path}.at("tensor '" + t.name + "'").msg("unsupported ggml type"));
        if (t.ne[0] % static_cast<uint64_t>(ggml_block_values(t.type)) != 0) {
            throw FormatError(ErrorInfo{path}.at("tensor '" + t.name + "'")
                                  .expected(log::cat("a row length that is a multiple of ", ggml_block_values(t.type), " for ",
                                                     ggml_type_name(t.type)))
                                  .found(std::to_string(t.ne[0])));
        }
        if (t.offset % alignment_ || data_start_ + t.offset + nb > file_->size()) {
            throw FormatError(ErrorInfo{path}.at("tensor '" + t.name + "'").msg("data out of bounds or misaligned"));
        }
    }
}

const GgufTensor* GgufFile::find(const std::string& name) const {
    for (const auto& t : tensors_) if (t.name == name) return &t;
    return nullptr;
}

const json& GgufFile::value(const std::string& key) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) throw FormatError(ErrorInfo{file_->path()}.at("key '" + key + "'").msg("missing"));
    return it->second.value;
}

const uint8_t* GgufFile::data(const GgufTensor& t) const { return file_->data() + data_start_ + t.offset; }

std::vector<float> GgufFile::to_float(const GgufTensor& t) const {
    uint64_t n = t.numel();
    std::vector<float> v(n);
    const uint8_t* p = data(t);
    switch (t.type) {
        case GGML_F32: std::memcpy(v.data(), p, n * 4); break;
        case GGML_F16:
            for (uint64_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); v[i] = half_to_float(h); }
            break;
        case GGML_BF16:
            for (uint64_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); v[i] = bf16_to_float(h); }
            break;
        default:
            if (!ggml_is_block_quant(t.type)) {
                throw FormatError(ErrorInfo{file_->path()}.at("tensor '" + t.name + "'").msg("unsupported ggml type"));
            }
            dequantize_blocks(t.type, p, static_cast<int64_t>(n), v.data());
    }
    return v;
}

}  // namespace pdsd::exporter
