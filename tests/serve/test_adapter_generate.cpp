// lora::load_generator (`pdsd chat/serve --adapter`): the LoRA adapter applied at load time
// without merging changes greedy output, and gives the output of the merged model
// (fixtures: tiny-qwen2 + the PEFT step-1 adapter, and PEFT's merge_and_unload of them).
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/lora/generator.h"
#include "pdsd/model/generate.h"

using namespace pdsd;

namespace {
std::vector<int64_t> greedy(model::Generator& g) {
    // A fixed prompt inside the tiny vocab (2048), 24 new tokens, never stopping early.
    std::vector<int64_t> prompt = {11, 523, 97, 1400, 7, 256, 1999, 64, 300, 812, 5, 1024};
    model::GenerationOptions o;
    o.do_sample = false;
    o.max_new_tokens = 24;
    o.eos_token_id = std::vector<int64_t>{};
    return g.generate(prompt, o).tokens;
}
}  // namespace

TEST(AdapterGenerate, UnmergedAdapterChangesOutputAndMatchesMergedModel) {
    auto base = model::Generator::load(test::golden("tiny-qwen2"), "cpu", "fp32");
    auto adapted = lora::load_generator(test::golden("tiny-qwen2"), "cpu", "fp32", test::golden("tiny-qwen2-lora-step1"));
    auto merged = model::Generator::load(test::golden("tiny-qwen2-merged"), "cpu", "fp32");
    auto b = greedy(base), a = greedy(adapted), m = greedy(merged);
    ASSERT_EQ(a.size(), 24u);
    EXPECT_NE(a, b) << "the adapter should change greedy output";
    EXPECT_EQ(a, m) << "unmerged adapter and merged model should agree";
}

TEST(AdapterGenerate, NoAdapterIsThePlainModel) {
    auto base = model::Generator::load(test::golden("tiny-qwen2"), "cpu", "fp32");
    auto plain = lora::load_generator(test::golden("tiny-qwen2"), "cpu", "fp32", "");
    EXPECT_EQ(greedy(base), greedy(plain));
}

TEST(AdapterGenerate, MissingAdapterIsAnError) {
    EXPECT_THROW(lora::load_generator(test::golden("tiny-qwen2"), "cpu", "fp32", "/nonexistent/adapter"), Error);
}
