// Qwen2 on CUDA (label gpu): skipped where no CUDA device is available.
#include "test_util.h"

#include "pdsd/core/safetensors.h"
#include "pdsd/model/decode_graph.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/weights.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

using namespace pdsd;
using namespace pdsd::model;

TEST(Qwen2Gpu, Bf16CudaMatchesCpuAndCachedGreedyEqualsRecompute) {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    at::NoGradGuard ng;
    Checkpoint ref = Checkpoint::open(test::golden("tiny-qwen2.reference.safetensors"));
    auto get = [&](const char* n) { return checkpoint_tensor(ref, n).clone(); };
    at::Tensor ids = get("input_ids"), mask = get("attention_mask").to(at::kBool), pos = get("position_ids");
    LoadOptions lo;
    lo.device = "cuda";
    lo.dtype = "bf16";
    auto gpu = std::make_shared<LoadedModel>(load_qwen2(test::golden("tiny-qwen2"), lo));
    at::Tensor logits = gpu->model->forward(ids, mask, pos).logits.to(at::kCPU).to(at::kFloat);
    // bf16 keeps 8 mantissa bits: logits of this model (|x| < ~3) agree to about 0.05.
    double diff = (logits.index({mask}) - get("logits").index({mask})).abs().max().item<double>();
    EXPECT_LT(diff, 0.1);
    Generator gen(gpu);
    std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(1));
    GenerationOptions o;
    o.do_sample = false;
    o.max_new_tokens = 24;
    o.eos_token_id = std::vector<int64_t>{};
    o.cuda_graph = false;  // SDPA on both sides; the graph path has its own test below
    auto cached = gen.generate(prompt, o).tokens;
    o.use_cache = false;
    EXPECT_EQ(cached, gen.generate(prompt, o).tokens);
}

// Decode steps replayed from a CUDA graph give the tokens of kernel-by-kernel decoding: fp32
// (tokens must match exactly, batch 1 and a left-padded batch of 3), and bf16 with a graph
// recaptured for a new cache.
TEST(Qwen2Gpu, CudaGraphDecodeEqualsEagerDecode) {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(DecodeGraph::supported(c10::Device(c10::kCUDA, 0))) << "libtorch with CUDA but no graph support compiled in";
    Checkpoint ref = Checkpoint::open(test::golden("tiny-qwen2.reference.safetensors"));
    at::Tensor ids = checkpoint_tensor(ref, "input_ids").clone();
    std::vector<int64_t> p0(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(1));
    std::vector<std::vector<int64_t>> prompts{p0, std::vector<int64_t>(p0.begin() + 5, p0.end()), {7}};
    for (const char* dtype : {"fp32", "bf16"}) {
        LoadOptions lo;
        lo.device = "cuda";
        lo.dtype = dtype;
        Generator gen(std::make_shared<LoadedModel>(load_qwen2(test::golden("tiny-qwen2"), lo)));
        GenerationOptions o;
        o.do_sample = false;
        o.max_new_tokens = 40;
        o.eos_token_id = std::vector<int64_t>{};
        o.repetition_penalty = 1.1;
        o.cuda_graph = false;
        auto eager1 = gen.generate(p0, o).tokens;
        auto eager3 = gen.generate_batch(prompts, o);
        o.cuda_graph = true;
        auto graph1 = gen.generate(p0, o).tokens;
        auto graph1_again = gen.generate(p0, o).tokens;  // replays the graph captured above
        auto graph3 = gen.generate_batch(prompts, o);     // new cache (batch 3): a new graph
        EXPECT_EQ(graph1, graph1_again) << dtype;
        if (std::string(dtype) == "fp32") {
            EXPECT_EQ(graph1, eager1);
            for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(graph3[i].tokens, eager3[i].tokens) << "row " << i;
        } else {
            // bf16: the graph path scores attention in fp32 and SDPA in bf16, and this random
            // model's top-2 gaps are near bf16 noise, so tokens may differ after a near tie;
            // each path must still be deterministic and run to full length.
            EXPECT_EQ(graph1.size(), 40u);
            for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(graph3[i].tokens.size(), 40u) << "row " << i;
        }
    }
}
