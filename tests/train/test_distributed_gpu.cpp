// The NCCL data-parallel backend on a real GPU (label gpu): a one-rank group, which a one-GPU
// machine can run (NCCL refuses two ranks on one device). Skipped without CUDA or without the
// backend in this build.
#include "pdsd/train/distributed.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <gtest/gtest.h>

#include <random>

using namespace pdsd;

TEST(DistributedGpu, OneRankNcclGroupAllReducesOnTheGpu) {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    if (!train::nccl_compiled()) GTEST_SKIP() << "built without nccl.h";
    train::DistEnv e;
    e.master_port = 30000 + static_cast<int64_t>(std::random_device{}() % 20000);
    const c10::Device dev(c10::kCUDA, 0);
    auto dp = train::make_backend(train::DistBackend::nccl, e, std::chrono::seconds(60), dev);
    ASSERT_NE(dp, nullptr);
    at::Tensor x = at::randn({540672}, at::TensorOptions().dtype(at::kDouble).device(dev));  // q,v r=8 LoRA grads
    at::Tensor y = x.clone();
    dp->all_reduce_sum(y);
    EXPECT_TRUE(at::equal(y.cpu(), x.cpu())) << "a sum over one rank is the tensor itself";
    at::Tensor host = at::tensor({1.5, 2.0}, at::kDouble);  // CPU tensors go through the GPU and back
    dp->all_reduce_sum(host);
    EXPECT_TRUE(host.device().is_cpu());
    EXPECT_EQ(host[1].item<double>(), 2.0);
    dp->barrier();
}
