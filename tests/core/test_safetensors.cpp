// safetensors reader/writer: golden header of the tiny Qwen2 fixture, sharded round
// trip, and one test per class of malformed file (each must give its own error).
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <random>

using namespace pdsd;
using nlohmann::json;

namespace {

// Raw safetensors bytes from a header JSON text and a data section.
std::string raw_file(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + data;
}

// Parse `bytes` and return the error message (empty if it parsed).
std::string parse_error(const std::string& bytes) {
    try {
        parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.safetensors");
    } catch (const FormatError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Safetensors, TinyQwen2HeaderMatchesFileAndConfig) {
    const std::string path = test::golden("tiny-qwen2/model.safetensors");
    SafetensorsFile f(path);
    // Independent read of the header JSON: every entry must come back with its dtype and shape.
    std::string bytes = read_file(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    json header = json::parse(bytes.substr(8, n));
    size_t expected_tensors = header.size() - (header.contains("__metadata__") ? 1 : 0);
    ASSERT_EQ(f.tensors().size(), expected_tensors);
    for (const auto& t : f.tensors()) {
        ASSERT_TRUE(header.contains(t.name)) << t.name;
        EXPECT_EQ(header[t.name]["dtype"].get<std::string>(), dtype_name(t.dtype)) << t.name;
        EXPECT_EQ(header[t.name]["shape"].get<std::vector<int64_t>>(), t.shape) << t.name;
    }
    EXPECT_EQ(f.metadata().at("format"), "pt");

    // The names and shapes a Qwen2 model with this config.json must have (tied lm_head: none).
    Qwen2Config c = load_qwen2_config(test::golden("tiny-qwen2"));
    const int64_t kv = c.num_key_value_heads * c.head_dim();
    std::map<std::string, std::vector<int64_t>> want = {
        {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}}, {"model.norm.weight", {c.hidden_size}}};
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
        std::string p = "model.layers." + std::to_string(i) + ".";
        want[p + "input_layernorm.weight"] = {c.hidden_size};
        want[p + "post_attention_layernorm.weight"] = {c.hidden_size};
        want[p + "self_attn.q_proj.weight"] = {c.hidden_size, c.hidden_size};
        want[p + "self_attn.q_proj.bias"] = {c.hidden_size};
        want[p + "self_attn.k_proj.weight"] = {kv, c.hidden_size};
        want[p + "self_attn.k_proj.bias"] = {kv};
        want[p + "self_attn.v_proj.weight"] = {kv, c.hidden_size};
        want[p + "self_attn.v_proj.bias"] = {kv};
        want[p + "self_attn.o_proj.weight"] = {c.hidden_size, c.hidden_size};
        want[p + "mlp.gate_proj.weight"] = {c.intermediate_size, c.hidden_size};
        want[p + "mlp.up_proj.weight"] = {c.intermediate_size, c.hidden_size};
        want[p + "mlp.down_proj.weight"] = {c.hidden_size, c.intermediate_size};
    }
    ASSERT_EQ(f.tensors().size(), want.size());
    for (const auto& [name, shape] : want) {
        const TensorInfo* t = f.find(name);
        ASSERT_NE(t, nullptr) << name;
        EXPECT_EQ(t->shape, shape) << name;
        EXPECT_EQ(t->dtype, DType::BF16) << name;
    }
}

TEST(Safetensors, ShardedRoundTripIsByteIdentical) {
    test::TempDir dir;
    std::mt19937 rng(7);
    std::vector<std::string> blobs;
    std::vector<TensorView> views;
    const std::vector<std::pair<DType, std::vector<int64_t>>> specs = {
        {DType::BF16, {64, 32}}, {DType::F32, {100}}, {DType::I64, {3, 5}}, {DType::F16, {7, 9, 2}},
        {DType::U8, {0}},        {DType::BOOL, {13}}, {DType::F64, {4, 4}}, {DType::I8, {33}}};
    blobs.reserve(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        uint64_t n = dtype_size(specs[i].first);
        for (auto d : specs[i].second) n *= d;
        std::string b(n, '\0');
        for (auto& ch : b) ch = static_cast<char>(rng() & 0xff);
        if (specs[i].first == DType::BOOL) for (auto& ch : b) ch &= 1;
        blobs.push_back(b);
        views.push_back({"t" + std::to_string(i), specs[i].first, specs[i].second, blobs.back().data(), n});
    }
    auto files = write_sharded(dir.str(), "model", views, /*max_shard_bytes=*/1500);
    ASSERT_GT(files.size(), 2u);  // several shards plus the index
    EXPECT_EQ(files.back(), "model.safetensors.index.json");

    json index = read_json_file(dir.file("model.safetensors.index.json"));
    uint64_t total = 0;
    for (const auto& v : views) total += v.nbytes;
    EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
    EXPECT_EQ(index["weight_map"].size(), views.size());

    Checkpoint ck = Checkpoint::open(dir.str());
    ASSERT_EQ(ck.names().size(), views.size());
    for (size_t i = 0; i < views.size(); ++i) {
        const TensorInfo& t = ck.info(views[i].name);
        EXPECT_EQ(t.dtype, views[i].dtype);
        EXPECT_EQ(t.shape, views[i].shape);
        ASSERT_EQ(t.nbytes(), blobs[i].size());
        EXPECT_EQ(0, std::memcmp(ck.data(views[i].name), blobs[i].data(), blobs[i].size())) << views[i].name;
        EXPECT_EQ(index["weight_map"][views[i].name].get<std::string>(),
                  std::filesystem::path(ck.file_of(views[i].name)).filename().string());
    }
    // Every shard except possibly oversize single-tensor ones respects the limit.
    for (size_t i = 0; i + 1 < files.size(); ++i) {
        SafetensorsFile shard(dir.file(files[i]));
        uint64_t bytes = 0;
        for (const auto& t : shard.tensors()) bytes += t.nbytes();
        EXPECT_TRUE(bytes <= 1500 || shard.tensors().size() == 1) << files[i];
    }
}

TEST(Safetensors, SingleFileWhenUnderShardLimit) {
    test::TempDir dir;
    float v[4] = {1, 2, 3, 4};
    auto files = write_sharded(dir.str(), "model", {{"w", DType::F32, {2, 2}, v, sizeof v}}, 0);
    ASSERT_EQ(files, std::vector<std::string>{"model.safetensors"});
    SafetensorsFile f(dir.file("model.safetensors"));
    EXPECT_EQ(f.tensors().size(), 1u);
    std::string bytes = read_file(dir.file("model.safetensors"));
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    EXPECT_EQ(n % 8, 0u);  // data section 8-byte aligned, as the reference writer does
}

TEST(Safetensors, LazyShardedWriterProducesOneTensorAtATimeInOrder) {
    test::TempDir dir;
    std::vector<std::vector<float>> data = {{1, 2, 3, 4}, {5, 6}, {7, 8, 9, 10, 11, 12}};
    std::vector<TensorView> specs;
    for (size_t i = 0; i < data.size(); ++i) {
        specs.push_back({"t" + std::to_string(i), DType::F32, {static_cast<int64_t>(data[i].size())}, nullptr,
                         data[i].size() * sizeof(float)});
    }
    std::vector<size_t> calls;
    std::vector<float> live;  // the producer's single buffer: reused for every tensor
    auto files = write_sharded_lazy(dir.str(), "model", specs, /*max_shard_bytes=*/20, [&](size_t i) {
        calls.push_back(i);
        live = data[i];
        TensorView v = specs[i];
        v.data = live.data();
        return v;
    });
    EXPECT_EQ(calls, (std::vector<size_t>{0, 1, 2}));
    ASSERT_EQ(files.size(), 4u);  // t0 (16 B), t1 (16+8 > 20), t2 (8+24 > 20): 3 shards + index
    Checkpoint ck = Checkpoint::open(dir.str());
    for (size_t i = 0; i < data.size(); ++i) {
        EXPECT_EQ(0, std::memcmp(ck.data(specs[i].name), data[i].data(), specs[i].nbytes));
    }
}

TEST(Safetensors, LazyShardedWriterRejectsViewThatDiffersFromPlan) {
    test::TempDir dir;
    float v[4] = {1, 2, 3, 4};
    std::vector<TensorView> specs = {{"w", DType::F32, {2, 2}, nullptr, sizeof v}};
    EXPECT_THROW(write_sharded_lazy(dir.str(), "model", specs, 0,
                                    [&](size_t) { return TensorView{"w", DType::F32, {4}, v, sizeof v}; }),
                 ShapeError);
    EXPECT_FALSE(std::filesystem::exists(dir.file("model.safetensors")));
}

TEST(Safetensors, WriterRejectsSpanMismatch) {
    test::TempDir dir;
    float v[3] = {1, 2, 3};
    EXPECT_THROW(write_safetensors(dir.file("x.safetensors"), {{"w", DType::F32, {2, 2}, v, sizeof v}}), ShapeError);
    EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

TEST(SafetensorsBadInput, Truncated) {
    EXPECT_NE(parse_error("abc").find("truncated"), std::string::npos);
}

TEST(SafetensorsBadInput, HeaderLengthBeyondFile) {
    std::string f = raw_file("{}", "");
    f[0] = 100;  // claims a 100-byte header, has 2
    EXPECT_NE(parse_error(f).find("header length"), std::string::npos);
}

TEST(SafetensorsBadInput, HugeHeaderLength) {
    std::string f(16, '\0');
    f[7] = 0x7f;
    EXPECT_NE(parse_error(f).find("at most 100 MB"), std::string::npos);
}

TEST(SafetensorsBadInput, InvalidJson) {
    EXPECT_NE(parse_error(raw_file("{\"a\": ", "")).find("valid JSON"), std::string::npos);
}

TEST(SafetensorsBadInput, NumberOverflowIsAFormatError) {
    // Found by the libFuzzer target: nlohmann reports "1e434" as out_of_range, not parse_error.
    EXPECT_NE(parse_error(raw_file(R"({"a":[152.1e434]})", "")).find("valid JSON"), std::string::npos);
}

TEST(SafetensorsBadInput, OffsetsOutOfBounds) {
    std::string e = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, 'x')));
    EXPECT_NE(e.find("tensor 'w' data_offsets"), std::string::npos) << e;
    EXPECT_NE(e.find("out of bounds"), std::string::npos) << e;
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
    std::string e = parse_error(raw_file(
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        std::string(12, 'x')));
    EXPECT_NE(e.find("no overlap"), std::string::npos) << e;
}

TEST(SafetensorsBadInput, UnknownDtype) {
    std::string e = parse_error(raw_file(R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "x"));
    EXPECT_NE(e.find("tensor 'w' dtype"), std::string::npos) << e;
    EXPECT_NE(e.find("'F8'"), std::string::npos) << e;
}

TEST(SafetensorsBadInput, ShapeSpanMismatch) {
    std::string e = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')));
    EXPECT_NE(e.find("shape [3] x F32 = 12 bytes"), std::string::npos) << e;
}

TEST(SafetensorsBadInput, ShapeOverflow) {
    std::string e = parse_error(raw_file(
        R"({"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}})", std::string(8, 'x')));
    EXPECT_NE(e.find("overflow"), std::string::npos) << e;
}

TEST(SafetensorsBadInput, BadMetadataAndEntries) {
    EXPECT_NE(parse_error(raw_file(R"({"__metadata__":{"a":1}})", "")).find("__metadata__.a"), std::string::npos);
    EXPECT_NE(parse_error(raw_file(R"([1,2])", "")).find("a JSON object"), std::string::npos);
    EXPECT_NE(parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")).find("non-negative"),
              std::string::npos);
    EXPECT_NE(parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, 'x')))
                  .find("begin <= end"),
              std::string::npos);
}

TEST(SafetensorsBadInput, TruncatedFileOnDiskNamesThePath) {
    test::TempDir dir;
    std::string good = read_file(test::golden("tiny-qwen2/model.safetensors"));
    std::string path = dir.file("cut.safetensors");
    std::ofstream(path, std::ios::binary) << good.substr(0, good.size() / 2);
    try {
        SafetensorsFile f(path);
        FAIL() << "expected FormatError";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("hint:"), std::string::npos);
    }
}

TEST(SafetensorsBadInput, IndexListingMissingTensor) {
    test::TempDir dir;
    float v[2] = {1, 2};
    write_safetensors(dir.file("model-00001-of-00001.safetensors"), {{"a", DType::F32, {2}, v, sizeof v}});
    write_file_atomic(dir.file("model.safetensors.index.json"),
                      R"({"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors"}})");
    EXPECT_THROW(Checkpoint::open(dir.str()), FormatError);
}
