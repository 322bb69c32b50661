// Qwen2 on CUDA (label gpu): skipped where no CUDA device is available.
#include "test_util.h"

#include "pdsd/core/safetensors.h"
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
    auto cached = gen.generate(prompt, o).tokens;
    o.use_cache = false;
    EXPECT_EQ(cached, gen.generate(prompt, o).tokens);
}
