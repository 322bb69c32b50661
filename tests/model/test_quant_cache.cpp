// The quantized-weight cache (model/quant_cache.h): a second load maps the cached file and
// gives bit-identical logits and greedy ids; a changed checkpoint or a damaged cache file
// misses (and is rewritten; an outdated file is removed); an unwritable cache folder only warns; PDSD_QUANT_CACHE=0 is off;
// PDSD_QUANT_CACHE_MAX_GB caps the folder, least recently used files first.
#include "pdsd/model/generate.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/quant_cache.h"

#include "test_util.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <system_error>

#include <sys/stat.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using namespace pdsd::model;
using quant::CacheUse;

// Sets the cache's environment variables for one test and restores them after.
class QuantCache : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* name : {"PDSD_CACHE_DIR", "PDSD_QUANT_CACHE", "XDG_CACHE_HOME", "PDSD_QUANT_CACHE_MAX_GB"}) {
            if (const char* v = std::getenv(name)) saved_[name] = v;
            ::unsetenv(name);
        }
        model_ = tmp_.file("model");
        fs::copy(pdsd::test::golden("tiny-qwen2"), model_);  // a copy: tests touch its files
        cache_ = tmp_.file("cache");
        ::setenv("PDSD_CACHE_DIR", cache_.c_str(), 1);
    }
    void TearDown() override {
        for (const char* name : {"PDSD_CACHE_DIR", "PDSD_QUANT_CACHE", "XDG_CACHE_HOME", "PDSD_QUANT_CACHE_MAX_GB"}) {
            if (saved_.count(name)) ::setenv(name, saved_[name].c_str(), 1);
            else ::unsetenv(name);
        }
    }

    // A float (fp32) load of the model copy, quantized through the cache.
    std::pair<std::shared_ptr<LoadedModel>, quant::QuantizeResult> load(const char* type) {
        LoadOptions o;
        o.dtype = "fp32";
        auto lm = std::make_shared<LoadedModel>(load_qwen2(model_, o));
        auto r = quant::quantize_model_cached(*lm, quant::parse_type(type), pdsd::Checkpoint::open(model_));
        return {lm, r};
    }

    pdsd::test::TempDir tmp_;
    std::string model_, cache_;
    std::map<std::string, std::string> saved_;
};

// Run by hand (not through ctest, which sets PDSD_CACHE_DIR), this binary's loads with --quant
// cache into a temp folder, never into ~/.cache.
class TempCacheDir : public ::testing::Environment {
public:
    void SetUp() override {
        if (std::getenv("PDSD_CACHE_DIR")) return;
        dir_ = (fs::temp_directory_path() / ("pdsd-test-quant-cache-" + std::to_string(::getpid()))).string();
        ::setenv("PDSD_CACHE_DIR", dir_.c_str(), 1);
    }
    void TearDown() override {
        std::error_code ec;
        if (!dir_.empty()) fs::remove_all(dir_, ec);
    }

private:
    std::string dir_;
};
[[maybe_unused]] ::testing::Environment* const kTempCacheDir = ::testing::AddGlobalTestEnvironment(new TempCacheDir);

at::Tensor logits(LoadedModel& lm) {
    torch::NoGradGuard ng;
    at::Tensor ids = at::tensor({5, 17, 300, 42, 9, 1000, 3, 77, 8, 1, 2, 3}, at::kLong).view({1, 12});
    at::Tensor prefill = lm.model->forward(ids).logits;  // 12 rows: the dequantizing ATen path
    KVCache c = KVCache::allocate(lm.config, 1, 16, lm.model->options());
    at::Tensor step = lm.model->forward(ids.narrow(1, 0, 1), {}, {}, &c).logits;  // 1 row: the streaming kernels
    return at::cat({prefill.reshape({-1}), step.reshape({-1})});
}

std::vector<int64_t> greedy(const std::shared_ptr<LoadedModel>& lm) {
    GenerationOptions g;
    g.do_sample = false;
    g.max_new_tokens = 8;
    g.eos_token_id = std::vector<int64_t>{};
    return Generator(lm).generate({5, 17, 300, 42}, g).tokens;
}

size_t files_in(const std::string& dir) {
    if (!fs::exists(dir)) return 0;
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST_F(QuantCache, SecondLoadMapsTheCacheAndGivesIdenticalLogits) {
    for (const char* type : {"int8", "int4"}) {
        auto [first, r1] = load(type);
        EXPECT_EQ(r1.use, CacheUse::written) << type;
        ASSERT_TRUE(fs::exists(r1.path)) << r1.path;
        EXPECT_EQ(fs::path(r1.path).parent_path(), fs::path(cache_));
        auto [second, r2] = load(type);
        EXPECT_EQ(r2.use, CacheUse::hit) << type;
        EXPECT_EQ(r2.path, r1.path);
        EXPECT_EQ(r2.bytes, r1.bytes);
        // Zero copy: the cached weights are views of the file, which holds at least their bytes.
        EXPECT_GE(static_cast<int64_t>(fs::file_size(r2.path)), r2.bytes);
        auto& qa = *second->model->model->layers[0]->self_attn->q_proj->quant;
        auto& qb = *first->model->model->layers[0]->self_attn->q_proj->quant;
        EXPECT_EQ(qa.type, qb.type);
        EXPECT_TRUE(at::equal(qa.q, qb.q));
        EXPECT_TRUE(at::equal(logits(*first), logits(*second))) << type;
        EXPECT_EQ(greedy(first), greedy(second)) << type;
    }
    EXPECT_EQ(files_in(cache_), 2u);  // one per type
    for (const auto& e : fs::directory_iterator(model_)) EXPECT_EQ(e.path().extension() == ".safetensors", e.path().filename() == "model.safetensors");
}

// Through the loader (LoadOptions::quant: weights quantized from their stored dtype): the
// second load finds the file the first wrote, does not rewrite it, and gives the same logits.
TEST_F(QuantCache, LoaderUsesTheCache) {
    LoadOptions o;
    o.dtype = "fp32";
    o.quant = "int4";
    auto first = std::make_shared<LoadedModel>(load_qwen2(model_, o));
    ASSERT_EQ(files_in(cache_), 1u);
    const fs::path file = fs::directory_iterator(cache_)->path();
    // A rewrite is a temp file renamed over it (a new inode); a hit only refreshes the mtime.
    auto inode = [&] { struct stat st {}; return ::stat(file.c_str(), &st) == 0 ? st.st_ino : 0; };
    const auto written = inode();
    ASSERT_NE(written, 0u);
    auto second = std::make_shared<LoadedModel>(load_qwen2(model_, o));
    EXPECT_EQ(files_in(cache_), 1u);
    EXPECT_EQ(inode(), written);
    EXPECT_EQ(second->quant_bytes, first->quant_bytes);
    EXPECT_TRUE(at::equal(logits(*first), logits(*second)));
    EXPECT_EQ(greedy(first), greedy(second));
}

TEST_F(QuantCache, ChangedCheckpointMisses) {
    auto [first, r1] = load("int8");
    ASSERT_EQ(r1.use, CacheUse::written);
    const fs::path st = fs::path(model_) / "model.safetensors";
    fs::last_write_time(st, fs::last_write_time(st) + std::chrono::seconds(10));  // `touch`
    auto [second, r2] = load("int8");
    EXPECT_EQ(r2.use, CacheUse::written);
    EXPECT_NE(r2.path, r1.path);
    EXPECT_FALSE(fs::exists(r1.path));  // the outdated file of the same folder and type is gone
    EXPECT_EQ(files_in(cache_), 1u);
    EXPECT_TRUE(at::equal(logits(*first), logits(*second)));
}

TEST_F(QuantCache, DamagedCacheIsIgnoredAndRewritten) {
    auto [first, r1] = load("int4");
    ASSERT_EQ(r1.use, CacheUse::written);
    const at::Tensor ref = logits(*first);
    const auto size = fs::file_size(r1.path);
    fs::resize_file(r1.path, size / 2);  // truncated
    auto [a, ra] = load("int4");
    EXPECT_EQ(ra.use, CacheUse::written);
    EXPECT_EQ(fs::file_size(r1.path), size);
    EXPECT_TRUE(at::equal(logits(*a), ref));
    {
        std::fstream f(r1.path, std::ios::in | std::ios::out | std::ios::binary);
        f.write("\xff\xff\xff\xff\xff\xff\xff\x7f{garbage", 17);  // header length and JSON wrong
    }
    auto [b, rb] = load("int4");
    EXPECT_EQ(rb.use, CacheUse::written);
    auto [c, rc] = load("int4");
    EXPECT_EQ(rc.use, CacheUse::hit);
    EXPECT_TRUE(at::equal(logits(*c), ref));
}

TEST_F(QuantCache, UnwritableCacheDirStillLoads) {
    { std::ofstream(tmp_.file("a-file")) << "x"; }
    const std::string bad = tmp_.file("a-file") + "/quant";  // below a regular file: cannot be made, even as root
    ::setenv("PDSD_CACHE_DIR", bad.c_str(), 1);
    auto [lm, r] = load("int4");
    EXPECT_EQ(r.use, CacheUse::unwritable);
    EXPECT_GT(r.bytes, 0);
    LoadOptions o;
    o.dtype = "fp32";
    auto ref = std::make_shared<LoadedModel>(load_qwen2(model_, o));
    EXPECT_EQ(quant::quantize_model(*ref, quant::Type::int4), r.bytes);
    EXPECT_TRUE(at::equal(logits(*lm), logits(*ref)));
}

TEST_F(QuantCache, SizeCapRemovesLeastRecentlyUsedFirst) {
    auto [a, ra] = load("int8");
    auto [b, rb] = load("int4");
    ASSERT_EQ(ra.use, CacheUse::written);
    ASSERT_EQ(rb.use, CacheUse::written);
    const auto now = fs::file_time_type::clock::now();
    fs::last_write_time(ra.path, now - std::chrono::seconds(100));
    fs::last_write_time(rb.path, now - std::chrono::seconds(50));
    const std::string other = cache_ + "/other-int8-0000000000000000.safetensors";   // another model's, oldest
    { std::ofstream(other) << "0123456789"; }
    fs::last_write_time(other, now - std::chrono::seconds(200));
    const std::string notes = cache_ + "/notes.txt";   // not a cache file: never counted or removed
    { std::ofstream(notes) << std::string(1 << 20, 'x'); }

    ::setenv("PDSD_QUANT_CACHE_MAX_GB", "abc", 1);   // not a number: the default (20 GB), nothing removed
    auto [c, rc] = load("int4");
    EXPECT_EQ(rc.use, CacheUse::hit);
    EXPECT_EQ(files_in(cache_), 4u);

    char cap[64];   // room for the int8 file only
    std::snprintf(cap, sizeof cap, "%.9f", static_cast<double>(fs::file_size(ra.path) + 5) / 1e9);
    ::setenv("PDSD_QUANT_CACHE_MAX_GB", cap, 1);
    auto [d, rd] = load("int8");   // a hit makes the int8 file the most recently used
    EXPECT_EQ(rd.use, CacheUse::hit);
    EXPECT_TRUE(fs::exists(ra.path));
    EXPECT_FALSE(fs::exists(rb.path));
    EXPECT_FALSE(fs::exists(other));
    EXPECT_TRUE(fs::exists(notes));
    EXPECT_TRUE(at::equal(logits(*d), logits(*a)));

    ::setenv("PDSD_QUANT_CACHE_MAX_GB", "0.000000001", 1);   // 1 byte: the file in use still stays
    auto [e, re] = load("int4");
    EXPECT_EQ(re.use, CacheUse::written);
    EXPECT_TRUE(fs::exists(re.path));
    EXPECT_FALSE(fs::exists(ra.path));
}

TEST_F(QuantCache, DisabledAndLocation) {
    ::setenv("PDSD_QUANT_CACHE", "0", 1);
    EXPECT_EQ(quant::cache_dir(), "");
    auto [lm, r] = load("int8");
    EXPECT_EQ(r.use, CacheUse::off);
    EXPECT_GT(r.bytes, 0);
    EXPECT_EQ(files_in(cache_), 0u);
    ::unsetenv("PDSD_QUANT_CACHE");
    EXPECT_EQ(quant::cache_dir(), cache_);
    ::unsetenv("PDSD_CACHE_DIR");
    ::setenv("XDG_CACHE_HOME", "/x/cache", 1);
    EXPECT_EQ(quant::cache_dir(), "/x/cache/pdsd/quant");
    ::unsetenv("XDG_CACHE_HOME");
    if (const char* home = std::getenv("HOME")) EXPECT_EQ(quant::cache_dir(), std::string(home) + "/.cache/pdsd/quant");
}

}  // namespace
