// The "bge" embedder behind make_embedder: folder resolution, folder-name naming, the
// query instruction, the token cap. Model: tiny-bert's weights + the WordPiece test vocab.
#include "pdsd/core/error.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/kb/knowledge_base.h"
#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <fstream>

using namespace pdsd;
namespace fs = std::filesystem;

namespace {
std::string make_model(const test::TempDir& tmp, const std::string& name) {
    fs::path m = fs::path(tmp.str()) / name;
    fs::create_directories(m);
    fs::copy_file(test::golden("tiny-bert/config.json"), m / "config.json");
    fs::copy_file(test::golden("tiny-bert/model.safetensors"), m / "model.safetensors");
    std::ifstream in(test::source_dir() + "/tests/tokenizer/fixtures/wordpiece/vocab.txt");
    std::ofstream out(m / "vocab.txt");
    std::string line;
    for (int i = 0; i < 1000 && std::getline(in, line); ++i) out << line << "\n";   // tiny-bert: vocab 1000
    return m.string();
}
double dot(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
    return s;
}
}  // namespace

TEST(BgeEmbedder, FolderGivesNamedNormalisedEmbedder) {
    test::TempDir tmp;
    auto e = kb::make_embedder(make_model(tmp, "bge-tiny-zh") + "/");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->name(), "bge-tiny-zh");
    EXPECT_EQ(e->dim(), 64);
    EXPECT_EQ(e->max_tokens(), 128u);   // max_position_embeddings of tiny-bert
    auto v = e->embed({"中文 hello", "一"}, false);
    ASSERT_EQ(v.size(), 2u);
    EXPECT_NEAR(dot(v[0], v[0]), 1.0, 1e-5);
    EXPECT_EQ(e->token_count("中文"), 4u);   // [CLS] 中 文 [SEP]
    EXPECT_EQ(kb::embed_model_store_name("/x/models/bge-tiny-zh/"), "bge-tiny-zh");
}

TEST(BgeEmbedder, ChineseQueryInstructionIsPrepended) {
    test::TempDir tmp;
    auto e = kb::make_embedder(make_model(tmp, "bge-tiny-zh"));
    auto q = e->embed({"安装"}, true)[0];
    auto d = e->embed({std::string("为这个句子生成表示以用于检索相关文章：") + "安装"}, false)[0];
    EXPECT_NEAR(dot(q, d), 1.0, 1e-6);
    auto e2 = kb::make_embedder(make_model(tmp, "bge-tiny-zh2"));
    kb::EmbedderOptions o;
    o.query_instruction = "none";
    e2->configure(o);
    EXPECT_NEAR(dot(e2->embed({"安装"}, true)[0], e2->embed({"安装"}, false)[0]), 1.0, 1e-6);
    // a non-bge name gets no instruction under "auto"
    auto e3 = kb::make_embedder(make_model(tmp, "tiny-bert-model"));
    EXPECT_NEAR(dot(e3->embed({"安装"}, true)[0], e3->embed({"安装"}, false)[0]), 1.0, 1e-6);
}

// kb_settings' default embed_dtype "auto" (bf16 on AVX512-BF16/AMX CPUs, else fp32) stays
// within cosine 0.999 of fp32 for every text.
TEST(BgeEmbedder, AutoDtypeDefaultStaysWithinCosine0999OfFp32) {
    test::TempDir tmp;
    EXPECT_EQ(kb::EmbedderOptions{}.dtype, "auto");
    auto a = kb::make_embedder(make_model(tmp, "bge-tiny-zh"));
    auto f = kb::make_embedder(make_model(tmp, "bge-tiny-zh-fp32"));
    kb::EmbedderOptions o;
    o.dtype = "fp32";
    f->configure(o);
    std::vector<std::string> texts{"中文 hello", "一", "如何安装软件包？请先更新索引，然后安装。", "hello world 123 abc"};
    auto va = a->embed(texts, false), vf = f->embed(texts, false);
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_GE(dot(va[i], vf[i]), 0.999) << texts[i];
}

TEST(BgeEmbedder, UnknownNamesAreConfigErrors) {
    EXPECT_THROW(kb::make_embedder("bge-large-zh-v1.5-not-here"), ConfigError);
    EXPECT_THROW(kb::make_embedder(test::golden("tiny-qwen2")), ConfigError);   // not a BERT folder
}
