// Data-parallel training across processes (one per device), started by torchrun
// (`torchrun --nproc_per_node N --no-python pdsd train ...`) or any launcher that sets
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
//
// Rendezvous goes through libtorch's c10d::TCPStore (its header and symbols ship in the PyPI
// wheel); the gradients are summed by one of two backends:
//   nccl  - c10d::ProcessGroupNCCL on the GPUs (libtorch_cuda's, as DDP uses): CUDA builds
//           where nccl.h was found (the wheel's nvidia-nccl package has it). Default on CUDA.
//   store - through the store itself, on CPU and CUDA alike: each rank publishes its flattened
//           fp64 buffer under a per-call key and every rank adds all buffers in rank order, so
//           the result is bit-identical on every rank. Per optimizer step that is one buffer of
//           the trainable LoRA gradients (Qwen2.5-0.5B q,v r=8: 540,672 values = 4.3 MB per
//           rank), small next to a step's compute. Default on the CPU: the wheel has
//           ProcessGroupGloo's symbols but not gloo's headers (c10d/ProcessGroupGloo.hpp
//           includes <gloo/...>), so Gloo cannot be constructed from C++.
// PDSD_DIST_BACKEND=store|nccl overrides the default.
//
// world == 1 (no WORLD_SIZE, or 1) gives no DataParallel at all: the single-process path is
// unchanged.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace pdsd::train {

struct DistEnv {
    int64_t rank = 0, world_size = 1, local_rank = 0;
    std::string master_addr = "127.0.0.1";
    int64_t master_port = 29500;
    bool agent_store = false;      // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True)
    std::string run_prefix;        // keys prefix: torchrun's run id + restart count
};

// Reads the launcher's environment; ConfigError when it is inconsistent (RANK >= WORLD_SIZE,
// missing MASTER_PORT with WORLD_SIZE > 1, ...).
DistEnv dist_env_from_environment();

class DataParallel {
public:
    virtual ~DataParallel() = default;
    virtual int64_t rank() const = 0;
    virtual int64_t world_size() const = 0;
    // Elementwise sum over ranks, in place. Any device and floating dtype; summed in fp64 in
    // rank order, so every rank gets the same bits. Collective: every rank must call it in
    // the same order with the same numel.
    virtual void all_reduce_sum(at::Tensor& t) = 0;
    // Every rank waits until all have reached it.
    virtual void barrier() = 0;
};

enum class DistBackend { store, nccl };
bool nccl_compiled();  // this build has the NCCL backend
// The backend for a trainer on `device`: PDSD_DIST_BACKEND when set (ConfigError when it
// names something unknown or unusable here), else nccl on CUDA when compiled, else store.
DistBackend choose_backend(const c10::Device& device);

// Connects to the store (rank 0 serves it unless the agent does), sets up the backend for
// `device` and waits for all ranks. nullptr when env.world_size == 1. `timeout`: how long a
// collective waits for the others.
std::unique_ptr<DataParallel> make_data_parallel(const DistEnv& env, std::chrono::milliseconds timeout,
                                                 const c10::Device& device = c10::Device(c10::kCPU));
// The same with the backend given, and also for a world of one (tests: a one-GPU machine can
// still run a one-rank NCCL group). ConfigError for nccl in a build without it.
std::unique_ptr<DataParallel> make_backend(DistBackend backend, const DistEnv& env, std::chrono::milliseconds timeout,
                                           const c10::Device& device);

}  // namespace pdsd::train
