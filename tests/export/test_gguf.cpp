// GGUF export: the file's header, metadata and tensor table read back by an independent small
// reader, fp16/bf16/Q8_0 conversions within their rounding bounds, and the tiny Qwen2 model
// exported (alone and through `pdsd export`) with every tensor's values checked.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/export/gguf.h"
#include "pdsd/export/merge.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

namespace fs = std::filesystem;
using namespace pdsd;
using namespace pdsd::exporter;
using nlohmann::json;

namespace {

// GPT-2 byte-level alphabet: byte b -> the UTF-8 of the code point that stands for it.
std::vector<std::string> byte_level_alphabet() {
    std::vector<int> cps(256, -1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cps[static_cast<size_t>(b)] = printable ? b : 256 + extra++;
    }
    std::vector<std::string> out;
    for (int cp : cps) {
        std::string s;
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        out.push_back(s);
    }
    return out;
}

// A copy of tiny-qwen2 with a small byte-level BPE tokenizer (256 byte tokens, 3 merges,
// <|endoftext|> 2000 = config bos, <|im_end|> 2001 = config eos, <|im_start|> 2002);
// ids 259..1999 and 2003..2047 stay unused, as in a real checkpoint's padded vocab.
void make_tiny_with_tokenizer(const std::string& dir) {
    fs::create_directories(dir);
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
        fs::copy_file(test::golden(std::string("tiny-qwen2/") + f), fs::path(dir) / f);
    }
    auto bytes = byte_level_alphabet();
    json vocab = json::object();
    for (int i = 0; i < 256; ++i) vocab[bytes[static_cast<size_t>(i)]] = i;
    std::string G = bytes[' '];
    vocab[G + "t"] = 256;
    vocab["he"] = 257;
    vocab[G + "the"] = 258;
    json tok = {{"version", "1.0"},
                {"added_tokens",
                 json::array({{{"id", 2000}, {"content", "<|endoftext|>"}, {"special", true}},
                              {{"id", 2001}, {"content", "<|im_end|>"}, {"special", true}},
                              {{"id", 2002}, {"content", "<|im_start|>"}, {"special", true}}})},
                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({G + " t", "h e", G + "t he"})}}}};
    write_file_atomic((fs::path(dir) / "tokenizer.json").string(), tok.dump());
    json tc = {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}, {"bos_token", nullptr},
               {"chat_template", "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}};
    write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), tc.dump());
}

// Export options for the tiny base (with tokenizer) at dir/base, merged with the step-1 LoRA
// into dir/out as a GGUF of `type`.
ExportOptions tiny_gguf_export(const test::TempDir& dir, const std::string& type) {
    make_tiny_with_tokenizer(dir.file("base"));
    ExportOptions o;
    o.model_name_or_path = dir.file("base");
    o.adapter_name_or_path = {test::golden("tiny-qwen2-lora-step1")};
    o.export_dir = dir.file("out");
    o.export_format = "gguf";
    o.gguf_type = type;
    return o;
}

float bf16f(const uint8_t* p, uint64_t i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return bf16_to_float(h);
}

}  // namespace

TEST(Gguf, HalfConversionRoundTripsEveryFiniteHalfAndRoundsToNearestEven) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7c00) == 0x7c00) continue;  // inf / nan
        float f = half_to_float(static_cast<uint16_t>(h));
        ASSERT_EQ(float_to_half(f), h) << h;
    }
    EXPECT_EQ(float_to_half(1.0f), 0x3c00);
    EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);                          // tie -> even
    EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);                      // tie -> even (up)
    EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
    EXPECT_EQ(float_to_half(65520.0f), 0x7c00);                                             // overflow -> inf
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);                                // smallest subnormal
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -26)), 0x0000);
    EXPECT_EQ(float_to_half(-2.0f), 0xc000);
    EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
    EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);   // tie -> even
    EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
    for (uint32_t b = 0; b < 0x10000; b += 7) {
        if ((b & 0x7f80) == 0x7f80) continue;
        ASSERT_EQ(float_to_bf16(bf16_to_float(static_cast<uint16_t>(b))), b);
    }
}

// Q8_0 error bound per value: |x - q d_h| <= d/2 + |q| |d - d_h| <= d/2 + 127 (d 2^-11 + 2^-25),
// with d = max|x|/127 and d_h its fp16 rounding (relative error <= 2^-11 for normal halves,
// absolute <= 2^-25 once d is below fp16's normal range, 2^-14).
TEST(Gguf, Q8_0QuantiseDequantiseStaysWithinTheBlockBound) {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    const int64_t n = 32 * 300;
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = nd(rng) * std::pow(10.f, static_cast<float>(i / 32 % 7) - 4.f);
    for (int64_t i = 64; i < 96; ++i) x[static_cast<size_t>(i)] = 0.f;  // an all-zero block
    x[200] = 1e4f;                                                       // an outlier block
    std::vector<uint8_t> q(static_cast<size_t>(n / 32 * 34));
    quantize_q8_0(x.data(), n, q.data());
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_q8_0(q.data(), n, y.data());
    double worst = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 32 + j)]));
        double d = amax / 127.0;
        uint16_t dh;
        std::memcpy(&dh, q.data() + b * 34, 2);
        EXPECT_EQ(dh, float_to_half(amax / 127.f)) << "block " << b;
        for (int j = 0; j < 32; ++j) {
            size_t i = static_cast<size_t>(b * 32 + j);
            double err = std::fabs(static_cast<double>(x[i]) - y[i]);
            double bound = d / 2 + 127 * (d * std::ldexp(1.0, -11) + std::ldexp(1.0, -25));
            ASSERT_LE(err, bound) << "value " << i;
            worst = std::max(worst, err / bound);
            int8_t qi;
            std::memcpy(&qi, q.data() + b * 34 + 2 + j, 1);
            float df = amax / 127.f;
            ASSERT_EQ(qi, static_cast<int8_t>(std::roundf(x[i] * (df != 0.f ? 1.f / df : 0.f)))) << i;
        }
    }
    for (int64_t i = 64; i < 96; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.f);
    EXPECT_GT(worst, 0.1);  // the bound is not vacuous
}

TEST(Gguf, TensorNamesAreLlamaCppQwen2Names) {
    EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
    EXPECT_EQ(gguf_tensor_name("model.norm.weight"), "output_norm.weight");
    EXPECT_EQ(gguf_tensor_name("lm_head.weight"), "output.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.11.self_attn.k_proj.bias"), "blk.11.attn_k.bias");
    EXPECT_EQ(gguf_tensor_name("model.layers.0.self_attn.o_proj.weight"), "blk.0.attn_output.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.3.post_attention_layernorm.weight"), "blk.3.ffn_norm.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.rotary_emb.inv_freq"), "");
    EXPECT_THROW(gguf_tensor_name("model.layers.0.mlp.experts.0.w1.weight"), FormatError);
    EXPECT_EQ(parse_gguf_type("BF16"), GgufType::BF16);
    EXPECT_EQ(parse_gguf_type("fp16"), GgufType::F16);
    EXPECT_EQ(parse_gguf_type("q8_0"), GgufType::Q8_0);
    EXPECT_THROW(parse_gguf_type("q4_k"), UsageError);
}

// BF16 export of the BF16 tiny model: header, metadata and tensor table as llama.cpp reads
// them, and every tensor's bytes identical to the safetensors (1D tensors widened to F32).
TEST(Gguf, TinyModelBf16ExportRoundTripsHeaderMetadataAndTensors) {
    test::TempDir dir;
    make_tiny_with_tokenizer(dir.file("tiny"));
    GgufReport r = write_gguf(dir.file("tiny"), dir.file("tiny.gguf"), GgufOptions{});
    EXPECT_EQ(r.n_vocab, 2048);
    EXPECT_EQ(r.tensors, 2 + 2 * 12);  // token_embd, output_norm, 12 per block; tied: no output.weight
    EXPECT_EQ(r.file_bytes, fs::file_size(dir.file("tiny.gguf")));
    for (const auto& e : fs::directory_iterator(dir.str())) {
        EXPECT_EQ(e.path().filename().string().rfind(".", 0), std::string::npos) << "temp file left: " << e.path();
    }

    GgufFile g(dir.file("tiny.gguf"));
    EXPECT_EQ(g.version(), 3u);
    EXPECT_EQ(g.alignment(), 32u);
    EXPECT_EQ(g.data_start() % 32, 0u);
    EXPECT_EQ(g.kv_order().front(), "general.architecture");
    EXPECT_EQ(g.value("general.architecture"), "qwen2");
    EXPECT_EQ(g.value("general.name"), "tiny");
    EXPECT_EQ(g.value("general.file_type"), 32);
    EXPECT_EQ(g.kv().at("general.file_type").type, static_cast<uint32_t>(GGUF_U32));
    EXPECT_EQ(g.value("qwen2.block_count"), 2);
    EXPECT_EQ(g.value("qwen2.context_length"), 1024);
    EXPECT_EQ(g.value("qwen2.embedding_length"), 64);
    EXPECT_EQ(g.value("qwen2.feed_forward_length"), 176);
    EXPECT_EQ(g.value("qwen2.attention.head_count"), 4);
    EXPECT_EQ(g.value("qwen2.attention.head_count_kv"), 2);
    EXPECT_EQ(g.kv().at("qwen2.rope.freq_base").type, static_cast<uint32_t>(GGUF_F32));
    EXPECT_FLOAT_EQ(g.value("qwen2.rope.freq_base").get<float>(), 1e6f);
    EXPECT_FLOAT_EQ(g.value("qwen2.attention.layer_norm_rms_epsilon").get<float>(), 1e-6f);
    EXPECT_EQ(g.value("tokenizer.ggml.model"), "gpt2");
    EXPECT_EQ(g.value("tokenizer.ggml.pre"), "qwen2");
    const json& toks = g.value("tokenizer.ggml.tokens");
    const json& types = g.value("tokenizer.ggml.token_type");
    ASSERT_EQ(toks.size(), 2048u);
    ASSERT_EQ(types.size(), 2048u);
    EXPECT_EQ(g.kv().at("tokenizer.ggml.token_type").elem_type, static_cast<uint32_t>(GGUF_I32));
    EXPECT_EQ(toks[65], "A");
    EXPECT_EQ(toks[32], "\xC4\xA0");  // byte 0x20 (space) is U+0120 in the byte-level alphabet
    EXPECT_EQ(toks[258], "\xC4\xA0the");
    EXPECT_EQ(types[258], TOKEN_NORMAL);
    EXPECT_EQ(toks[2001], "<|im_end|>");
    EXPECT_EQ(types[2001], TOKEN_CONTROL);
    EXPECT_EQ(toks[1000], "[PAD1000]");
    EXPECT_EQ(types[1000], TOKEN_UNUSED);
    EXPECT_EQ(g.value("tokenizer.ggml.merges"), json::array({"\xC4\xA0 t", "h e", "\xC4\xA0t he"}));
    EXPECT_EQ(g.value("tokenizer.ggml.eos_token_id"), 2001);
    EXPECT_EQ(g.value("tokenizer.ggml.padding_token_id"), 2000);
    EXPECT_EQ(g.value("tokenizer.ggml.bos_token_id"), 2000);  // from config.json (tokenizer_config's is null)
    EXPECT_EQ(g.value("tokenizer.ggml.add_bos_token"), false);
    EXPECT_NE(g.value("tokenizer.chat_template").get<std::string>().find("<|im_start|>"), std::string::npos);

    Checkpoint ck = Checkpoint::open(dir.file("tiny"));
    std::set<std::string> seen;
    for (const auto& hf : ck.names()) {
        std::string gn = gguf_tensor_name(hf);
        const GgufTensor* t = g.find(gn);
        ASSERT_NE(t, nullptr) << gn;
        seen.insert(gn);
        const TensorInfo& ti = ck.info(hf);
        ASSERT_EQ(t->ne.size(), ti.shape.size()) << gn;
        for (size_t d = 0; d < ti.shape.size(); ++d) EXPECT_EQ(t->ne[d], static_cast<uint64_t>(ti.shape[ti.shape.size() - 1 - d])) << gn;
        EXPECT_EQ(t->offset % 32, 0u);
        if (ti.shape.size() == 1) {
            EXPECT_EQ(t->type, static_cast<uint32_t>(GGML_F32)) << gn;
            std::vector<float> v = g.to_float(*t);
            for (uint64_t i = 0; i < ti.numel(); ++i) ASSERT_EQ(v[i], bf16f(ck.data(hf), i)) << gn;
        } else {
            EXPECT_EQ(t->type, static_cast<uint32_t>(GGML_BF16)) << gn;
            EXPECT_EQ(std::memcmp(g.data(*t), ck.data(hf), ti.nbytes()), 0) << gn;
        }
    }
    EXPECT_EQ(seen.size(), g.tensors().size());
    EXPECT_EQ(g.find("blk.1.attn_q.bias")->ne, std::vector<uint64_t>{64});
    EXPECT_EQ(g.find("token_embd.weight")->ne, (std::vector<uint64_t>{64, 2048}));
}

// Q8_0: 2D weights quantised within the Q8_0 bound, ffn_down (rows of 176, not a multiple
// of 32) falls back to F16 (BF16 -> F16 is exact down to 2^-14, rounded below), norms and biases F32.
TEST(Gguf, TinyModelQ8_0AndF16ExportsHoldTheWeightsWithinTheirBounds) {
    test::TempDir dir;
    make_tiny_with_tokenizer(dir.file("tiny"));
    Checkpoint ck = Checkpoint::open(dir.file("tiny"));
    for (GgufType type : {GgufType::Q8_0, GgufType::F16}) {
        GgufOptions o;
        o.type = type;
        std::string path = dir.file(std::string("tiny-") + gguf_type_name(type) + ".gguf");
        GgufReport r = write_gguf(dir.file("tiny"), path, o);
        EXPECT_EQ(r.f16_fallbacks, type == GgufType::Q8_0 ? 2 : 0);
        GgufFile g(path);
        EXPECT_EQ(g.value("general.file_type"), type == GgufType::Q8_0 ? 7 : 1);
        for (const auto& hf : ck.names()) {
            const GgufTensor* t = g.find(gguf_tensor_name(hf));
            ASSERT_NE(t, nullptr);
            const TensorInfo& ti = ck.info(hf);
            std::vector<float> v = g.to_float(*t);
            uint32_t want = ti.shape.size() == 1 ? GGML_F32
                            : type == GgufType::F16 || hf.find("down_proj") != std::string::npos ? GGML_F16
                                                                                                 : GGML_Q8_0;
            EXPECT_EQ(t->type, want) << t->name;
            uint64_t row = ti.shape.back();
            for (uint64_t i = 0; i < ti.numel(); ++i) {
                float x = bf16f(ck.data(hf), i);
                if (want == GGML_F32) {
                    ASSERT_EQ(v[i], x) << t->name << " " << i;
                } else if (want == GGML_F16) {  // exact unless |x| < 2^-14 (fp16 subnormal: nearest half)
                    ASSERT_EQ(v[i], half_to_float(float_to_half(x))) << t->name << " " << i;
                    if (std::fabs(x) >= std::ldexp(1.0f, -14)) {
                        ASSERT_EQ(v[i], x) << t->name << " " << i;
                    }
                } else {
                    uint64_t b0 = i / 32 * 32;
                    ASSERT_EQ(b0 / row, (b0 + 31) / row);  // blocks never straddle rows
                    float amax = 0;
                    for (uint64_t j = b0; j < b0 + 32; ++j) amax = std::max(amax, std::fabs(bf16f(ck.data(hf), j)));
                    double d = amax / 127.0;
                    ASSERT_LE(std::fabs(v[i] - x), d / 2 + 127 * (d * std::ldexp(1.0, -11) + std::ldexp(1.0, -25))) << t->name << " " << i;
                }
            }
        }
    }
}

TEST(Gguf, MissingTokenizerIsAnErrorThatLeavesNoFile) {
    test::TempDir dir;
    EXPECT_THROW(write_gguf(test::golden("tiny-qwen2"), dir.file("x.gguf"), GgufOptions{}), IoError);
    EXPECT_TRUE(fs::is_empty(dir.str()));
}

TEST(Gguf, ReaderRejectsTruncatedAndForeignFiles) {
    test::TempDir dir;
    make_tiny_with_tokenizer(dir.file("tiny"));
    write_gguf(dir.file("tiny"), dir.file("t.gguf"), GgufOptions{});
    std::string bytes = read_file(dir.file("t.gguf"));
    for (size_t cut : {size_t{3}, size_t{20}, size_t{5000}, bytes.size() - 1}) {
        write_file_atomic(dir.file("cut.gguf"), std::string_view(bytes).substr(0, cut));
        EXPECT_THROW(GgufFile(dir.file("cut.gguf")), FormatError) << cut;
    }
    EXPECT_THROW(GgufFile(dir.file("tiny/model.safetensors")), FormatError);
}

// `pdsd export --export_format gguf --gguf_type q8_0`: the merged folder carries the GGUF,
// listed in the manifest, and its weights are the merged (not the base) weights.
TEST(Gguf, ExportWithGgufFormatWritesTheMergedModelAsGguf) {
    test::TempDir dir;
    ExportOptions o = tiny_gguf_export(dir, "bf16");
    ExportReport r = run_export(o);
    EXPECT_EQ(r.gguf_file, "model-bf16.gguf");
    ASSERT_TRUE(fs::exists(dir.file("out/model-bf16.gguf")));
    json mf = read_json_file(dir.file("out/pdsd_manifest.json"));
    bool listed = false;
    for (const auto& f : mf["files"]) listed |= f["path"] == "model-bf16.gguf";
    EXPECT_TRUE(listed);
    GgufFile g(dir.file("out/model-bf16.gguf"));
    Checkpoint merged = Checkpoint::open(test::golden("tiny-qwen2-merged"));
    const char* q = "model.layers.0.self_attn.q_proj.weight";
    EXPECT_EQ(std::memcmp(g.data(*g.find("blk.0.attn_q.weight")), merged.data(q), merged.info(q).nbytes()), 0);
    EXPECT_EQ(g.value("general.name"), "out");

    o.gguf_type = "q4_k";
    o.export_dir = dir.file("out2");
    EXPECT_THROW(run_export(o), UsageError);
    EXPECT_FALSE(fs::exists(dir.file("out2")));
}

// llama-quantize mixes on the tiny model (width 64, ffn rows of 176, 2 layers, tied): the
// writer stores each tensor in gguf_tensor_type's type, as the blocks of the source values
// (dequantized back they equal quantize -> dequantize of the bf16 weights exactly), and the
// report counts the types and the row-length fallbacks.
TEST(Gguf, TinyModelQuantizedMixesStoreTheQuantizedSourceValues) {
    test::TempDir dir;
    make_tiny_with_tokenizer(dir.file("tiny"));
    Checkpoint ck = Checkpoint::open(dir.file("tiny"));
    for (GgufType type : {GgufType::Q4_0, GgufType::Q5_0, GgufType::Q4_K_M, GgufType::Q5_K_M, GgufType::Q6_K}) {
        GgufOptions o;
        o.type = type;
        std::string path = dir.file(std::string("tiny-") + gguf_type_name(type) + ".gguf");
        GgufReport r = write_gguf(dir.file("tiny"), path, o);
        GgufFile g(path);
        EXPECT_EQ(g.value("general.file_type"), gguf_file_type(type));
        std::map<std::string, int64_t> counts;
        int64_t fallbacks = 0;
        for (const auto& hf : ck.names()) {
            const GgufTensor* t = g.find(gguf_tensor_name(hf));
            ASSERT_NE(t, nullptr);
            GgufTensorType want = gguf_tensor_type(type, t->name, t->ne, 2, true);
            EXPECT_EQ(t->type, want.type) << t->name;
            ++counts[ggml_type_name(t->type)];
            fallbacks += want.type != want.wanted;
            const TensorInfo& ti = ck.info(hf);
            std::vector<float> x(ti.numel());
            for (uint64_t i = 0; i < ti.numel(); ++i) x[i] = bf16f(ck.data(hf), i);
            std::vector<float> v = g.to_float(*t);
            std::vector<float> expect = x;
            if (ggml_is_block_quant(t->type)) {
                std::vector<uint8_t> q(ggml_nbytes(t->type, x.size()));
                quantize_blocks(t->type, x.data(), static_cast<int64_t>(x.size()), q.data());
                EXPECT_EQ(std::memcmp(q.data(), g.data(*t), q.size()), 0) << t->name;
                dequantize_blocks(t->type, q.data(), static_cast<int64_t>(x.size()), expect.data());
            } else if (t->type == GGML_F16) {
                for (float& e : expect) e = half_to_float(float_to_half(e));
            }
            for (uint64_t i = 0; i < ti.numel(); ++i) ASSERT_EQ(v[i], expect[i]) << t->name << " " << i;
        }
        EXPECT_EQ(r.type_counts, counts) << gguf_type_name(type);
        EXPECT_EQ(r.fallbacks, fallbacks);
        EXPECT_EQ(r.f16_fallbacks, 2);  // both ffn_down (rows of 176)
        EXPECT_EQ(g.find("blk.1.ffn_down.weight")->type, static_cast<uint32_t>(GGML_F16));
        EXPECT_EQ(g.find("token_embd.weight")->type, static_cast<uint32_t>(GGML_Q8_0));  // tied output, 64 % 256
    }
}

// With a GGUF the Modelfile names it (Ollama would otherwise convert the safetensors) and
// keeps Qwen2.5's template and stop; without one it stays `FROM .`.
TEST(Gguf, ModelfilePointsAtTheGguf) {
    test::TempDir dir;
    ExportOptions o = tiny_gguf_export(dir, "Q4_K_M");
    o.template_name = "qwen";
    ExportReport r = run_export(o);
    EXPECT_EQ(r.gguf_file, "model-q4_k_m.gguf");
    std::string mf = read_file(dir.file("out/Modelfile"));
    EXPECT_NE(mf.find("\nFROM ./model-q4_k_m.gguf\n"), std::string::npos) << mf;
    EXPECT_EQ(mf.find("FROM .\n"), std::string::npos);
    EXPECT_NE(mf.find("<|im_start|>assistant\n"), std::string::npos);
    EXPECT_NE(mf.find("PARAMETER stop \"<|im_end|>\""), std::string::npos);
    GgufFile g(dir.file("out/model-q4_k_m.gguf"));
    EXPECT_EQ(g.value("general.file_type"), 15);
    o.export_format = "safetensors";
    o.export_dir = dir.file("out-st");
    run_export(o);
    EXPECT_NE(read_file(dir.file("out-st/Modelfile")).find("\nFROM .\n"), std::string::npos);
}
