// Data-parallel training across processes (one per device), started by torchrun
// (`torchrun --nproc_per_node N --no-python pdsd train ...`) or any launcher that sets
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
//
// Rendezvous and communication go through libtorch's c10d::TCPStore (its header and symbols
// ship in the PyPI wheel). The wheel has ProcessGroupGloo's symbols but not gloo's headers
// (c10d/ProcessGroupGloo.hpp includes <gloo/...>), so it cannot be constructed from C++;
// ProcessGroupNCCL could be (nccl.h and the CUDA headers come with the nvidia-* pip packages)
// but is untested without a multi-GPU machine and not written. pdsd all-reduces through the
// store instead, on CPU and CUDA alike: each rank publishes its flattened fp64 buffer under
// a per-call key and every rank adds all buffers in rank order. The result is bit-identical on
// every rank. The traffic per optimizer step is one buffer of the trainable LoRA gradients
// (Qwen2.5-0.5B q,v r=8: 540,672 values = 4.3 MB per rank), small next to a step's compute;
// a full-parameter trainer would need a real process group.
//
// world == 1 (no WORLD_SIZE, or 1) gives no DataParallel at all: the single-process path is
// unchanged.
#pragma once

#include <ATen/core/Tensor.h>

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

// Connects to the store (rank 0 serves it unless the agent does) and waits for all ranks.
// nullptr when env.world_size == 1. `timeout`: how long a collective waits for the others.
std::unique_ptr<DataParallel> make_data_parallel(const DistEnv& env, std::chrono::milliseconds timeout);

}  // namespace pdsd::train
