// Data parallelism for the LoRA trainer: the store backend, and the choice of backend; see
// distributed.h. The NCCL backend is in distributed_nccl.cpp (CUDA builds only).
#include "pdsd/train/distributed.h"

#include "distributed_session.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <cstring>
#include <thread>

namespace pdsd::train {

namespace {

constexpr const char* kComp = "dist";

std::string env_or(const char* name, const std::string& dflt) {
    const char* v = std::getenv(name);
    return v && *v ? std::string(v) : dflt;
}

int64_t env_int(const char* name, int64_t dflt) {
    const std::string s = env_or(name, "");
    if (s.empty()) return dflt;
    try {
        size_t used = 0;
        const long long v = std::stoll(s, &used);
        if (used == s.size()) return v;
    } catch (const std::exception&) {
    }
    throw ConfigError(ErrorInfo{}.at(std::string("environment variable ") + name).expected("an integer").found(s));
}

}  // namespace

StoreSession::StoreSession(const DistEnv& env, std::chrono::milliseconds timeout) : world(env.world_size) {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(env.master_port);
    o.isServer = serving = env.rank == 0 && !env.agent_store;
    o.numWorkers = env.agent_store ? std::nullopt : std::optional<std::size_t>(static_cast<std::size_t>(env.world_size));
    o.waitWorkers = !env.agent_store;
    o.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
        tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    } catch (const std::exception& e) {
        throw IoError(ErrorInfo{env.master_addr + ":" + std::to_string(env.master_port)}
                          .msg(std::string("cannot join the c10d TCPStore: ") + e.what())
                          .hint("check MASTER_ADDR / MASTER_PORT and that every rank was started"));
    }
    store = c10::make_intrusive<c10d::PrefixStore>("pdsd/" + env.run_prefix, tcp);
}

// Rank 0 serves the store (without torchrun's agent): it waits, up to 60 s, until every
// rank has said goodbye, so that no rank loses the server in the middle of a last call.
StoreSession::~StoreSession() {
    try {
        store->add("bye", 1);
        if (!serving) return;
        const auto t0 = std::chrono::steady_clock::now();
        while (store->add("bye", 0) < world && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    } catch (const std::exception&) {  // the others are gone already: nothing to wait for
    }
}

namespace {

class StoreDataParallel final : public DataParallel {
public:
    StoreDataParallel(const DistEnv& env, std::chrono::milliseconds timeout)
        : rank_(env.rank), world_(env.world_size), session_(env, timeout) {
        barrier();
        log::info(kComp, log::cat("rank ", rank_, " of ", world_, " joined ", env.master_addr, ":", env.master_port,
                                  " (all-reduce through the store)"));
    }

    int64_t rank() const override { return rank_; }
    int64_t world_size() const override { return world_; }

    void all_reduce_sum(at::Tensor& t) override {
        const std::string base = "ar/" + std::to_string(seq_++) + "/";
        at::Tensor mine = t.detach().to(at::kCPU, at::kDouble).contiguous().view(-1);
        const size_t nbytes = static_cast<size_t>(mine.numel()) * sizeof(double);
        std::vector<uint8_t> buf(nbytes);
        std::memcpy(buf.data(), mine.data_ptr<double>(), nbytes);
        session_.store->set(base + std::to_string(rank_), buf);
        at::Tensor acc = at::zeros_like(mine);
        for (int64_t r = 0; r < world_; ++r) {  // rank order: the same sum on every rank
            std::vector<uint8_t> got = r == rank_ ? buf : session_.store->get(base + std::to_string(r));
            if (got.size() != nbytes) {
                throw InternalError(ErrorInfo{}.at("all_reduce " + base).expected(std::to_string(nbytes) + " bytes")
                                        .found(std::to_string(got.size()) + " from rank " + std::to_string(r)));
            }
            acc += at::from_blob(got.data(), {mine.numel()}, at::kDouble);
        }
        // The last rank to finish reading removes this call's keys.
        if (session_.store->add(base + "read", 1) == world_) {
            for (int64_t r = 0; r < world_; ++r) session_.store->deleteKey(base + std::to_string(r));
            session_.store->deleteKey(base + "read");
        }
        t.detach().copy_(acc.view(t.sizes()).to(t.device(), t.scalar_type()));
    }

    void barrier() override {
        at::Tensor one = at::ones({1}, at::kDouble);
        all_reduce_sum(one);
    }

private:
    int64_t rank_, world_;
    int64_t seq_ = 0;
    StoreSession session_;
};

}  // namespace

DistEnv dist_env_from_environment() {
    DistEnv e;
    e.world_size = env_int("WORLD_SIZE", 1);
    e.rank = env_int("RANK", 0);
    e.local_rank = env_int("LOCAL_RANK", e.rank);
    if (e.world_size < 1 || e.rank < 0 || e.rank >= e.world_size) {
        throw ConfigError(ErrorInfo{}.at("RANK / WORLD_SIZE").expected("0 <= RANK < WORLD_SIZE")
                              .found(std::to_string(e.rank) + " / " + std::to_string(e.world_size)));
    }
    if (e.world_size == 1) return e;
    e.master_addr = env_or("MASTER_ADDR", "127.0.0.1");
    if (env_or("MASTER_PORT", "").empty()) {
        throw ConfigError(ErrorInfo{}.at("MASTER_PORT").msg("is not set but WORLD_SIZE is " + std::to_string(e.world_size))
                              .hint("start with torchrun --no-python pdsd train ..., or set MASTER_ADDR and MASTER_PORT"));
    }
    e.master_port = env_int("MASTER_PORT", 29500);
    e.agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
    e.run_prefix = env_or("TORCHELASTIC_RUN_ID", "run") + "/" + env_or("TORCHELASTIC_RESTART_COUNT", "0");
    return e;
}

bool nccl_compiled() {
#ifdef PDSD_WITH_NCCL
    return true;
#else
    return false;
#endif
}

DistBackend choose_backend(const c10::Device& device) {
    const std::string v = env_or("PDSD_DIST_BACKEND", "");
    if (v == "store") return DistBackend::store;
    if (v == "nccl") {
        if (!nccl_compiled()) {
            throw ConfigError(ErrorInfo{}.at("PDSD_DIST_BACKEND").msg("this pdsd was built without NCCL").found("nccl")
                                  .hint("build against a CUDA libtorch with nccl.h found (the PyPI wheel's nvidia-nccl), or use store"));
        }
        if (!device.is_cuda()) {
            throw ConfigError(ErrorInfo{}.at("PDSD_DIST_BACKEND").msg("NCCL needs CUDA devices").found("nccl on " + device.str())
                                  .hint("use store on the CPU"));
        }
        return DistBackend::nccl;
    }
    if (!v.empty()) throw ConfigError(ErrorInfo{}.at("PDSD_DIST_BACKEND").expected("store or nccl").found(v));
    return device.is_cuda() && nccl_compiled() ? DistBackend::nccl : DistBackend::store;
}

std::unique_ptr<DataParallel> make_backend(DistBackend backend, const DistEnv& env, std::chrono::milliseconds timeout,
                                           const c10::Device& device) {
    if (backend == DistBackend::nccl) {
#ifdef PDSD_WITH_NCCL
        return make_nccl_data_parallel(env, timeout, device);
#else
        throw ConfigError(ErrorInfo{}.at("data parallel backend").msg("this pdsd was built without NCCL").found("nccl"));
#endif
    }
    return std::make_unique<StoreDataParallel>(env, timeout);
}

std::unique_ptr<DataParallel> make_data_parallel(const DistEnv& env, std::chrono::milliseconds timeout,
                                                 const c10::Device& device) {
    const DistBackend backend = choose_backend(device);  // validates PDSD_DIST_BACKEND even for one rank
    if (env.world_size <= 1) return nullptr;
    return make_backend(backend, env, timeout, device);
}

}  // namespace pdsd::train
