// train/distributed.h: the launcher environment is read as torchrun sets it, and two ranks
// (threads here, each with its own store client; rank 0 serves) all-reduce to the same bits.
#include "pdsd/core/error.h"
#include "pdsd/train/distributed.h"

#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <thread>

using namespace pdsd;

namespace {

struct EnvGuard {  // sets the launcher variables for one test, unsets them after
    explicit EnvGuard(std::vector<std::pair<const char*, const char*>> vars) {
        for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) unsetenv(n);
        for (auto& [n, v] : vars) setenv(n, v, 1);
    }
    ~EnvGuard() {
        for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) unsetenv(n);
    }
};

}  // namespace

TEST(Distributed, NoLauncherMeansOneProcessAndNoCommunication) {
    EnvGuard g({});
    const auto e = train::dist_env_from_environment();
    EXPECT_EQ(e.world_size, 1);
    EXPECT_EQ(e.rank, 0);
    EXPECT_EQ(train::make_data_parallel(e, std::chrono::seconds(1)), nullptr);
}

TEST(Distributed, ReadsTorchrunVariablesAndRefusesInconsistentOnes) {
    {
        EnvGuard g({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "29512"},
                    {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
        const auto e = train::dist_env_from_environment();
        EXPECT_EQ(e.rank, 1);
        EXPECT_EQ(e.world_size, 4);
        EXPECT_EQ(e.local_rank, 1);
        EXPECT_EQ(e.master_addr, "10.0.0.2");
        EXPECT_EQ(e.master_port, 29512);
        EXPECT_TRUE(e.agent_store);
    }
    {
        EnvGuard g({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29512"}});
        EXPECT_THROW(train::dist_env_from_environment(), ConfigError);
    }
    {
        EnvGuard g({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
        EXPECT_THROW(train::dist_env_from_environment(), ConfigError);  // no MASTER_PORT
    }
    {
        EnvGuard g({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29512"}});
        EXPECT_THROW(train::dist_env_from_environment(), ConfigError);
    }
}

TEST(Distributed, TwoRanksAllReduceToTheSameBits) {
    std::mt19937 rng(std::random_device{}());
    const int64_t port = 30000 + static_cast<int64_t>(rng() % 20000);
    const at::Tensor a = at::randn({1000}, at::kFloat), b = at::randn({1000}, at::kFloat);
    at::Tensor out[2];
    std::exception_ptr err[2];
    auto rank_main = [&](int64_t r) {
        try {
            train::DistEnv e;
            e.rank = r;
            e.world_size = 2;
            e.master_port = port;
            auto dp = train::make_data_parallel(e, std::chrono::seconds(60));
            at::Tensor t = (r == 0 ? a : b).clone();
            dp->all_reduce_sum(t);
            dp->barrier();
            at::Tensor again = (r == 0 ? a : b).clone();  // a second call reuses nothing of the first
            dp->all_reduce_sum(again);
            EXPECT_TRUE(at::equal(again, t));
            out[r] = t;
        } catch (...) {
            err[r] = std::current_exception();
        }
    };
    std::thread t0(rank_main, 0), t1(rank_main, 1);
    t0.join();
    t1.join();
    for (auto& e : err) if (e) std::rethrow_exception(e);
    EXPECT_TRUE(at::equal(out[0], out[1]));
    EXPECT_TRUE(at::equal(out[0], (a.to(at::kDouble) + b.to(at::kDouble)).to(at::kFloat)));
    EXPECT_EQ(out[0].scalar_type(), at::kFloat);
}

TEST(Distributed, BackendIsNcclOnCudaWhenBuiltAndStoreOnTheCpu) {
    EnvGuard g({});
    unsetenv("PDSD_DIST_BACKEND");
    EXPECT_EQ(train::choose_backend(c10::Device(c10::kCPU)), train::DistBackend::store);
    EXPECT_EQ(train::choose_backend(c10::Device(c10::kCUDA, 1)),
              train::nccl_compiled() ? train::DistBackend::nccl : train::DistBackend::store);
    setenv("PDSD_DIST_BACKEND", "store", 1);
    EXPECT_EQ(train::choose_backend(c10::Device(c10::kCUDA, 0)), train::DistBackend::store);
    setenv("PDSD_DIST_BACKEND", "nccl", 1);
    EXPECT_THROW(train::choose_backend(c10::Device(c10::kCPU)), ConfigError);  // NCCL needs CUDA
    setenv("PDSD_DIST_BACKEND", "gloo", 1);
    EXPECT_THROW(train::choose_backend(c10::Device(c10::kCPU)), ConfigError);
    EXPECT_THROW(train::make_data_parallel(train::DistEnv{}, std::chrono::seconds(1)), ConfigError);  // checked for 1 rank too
    unsetenv("PDSD_DIST_BACKEND");
}
