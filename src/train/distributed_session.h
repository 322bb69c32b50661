// Internal to train/distributed*.cpp: the rendezvous store every backend starts from.
#pragma once

#include "pdsd/train/distributed.h"

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>

namespace pdsd::train {

// The c10d TCPStore (rank 0 serves it unless torchrun's agent does), under the run's key
// prefix. The destructor says goodbye; the serving rank waits for everyone's goodbye.
struct StoreSession {
    StoreSession(const DistEnv& env, std::chrono::milliseconds timeout);
    ~StoreSession();
    StoreSession(const StoreSession&) = delete;
    StoreSession& operator=(const StoreSession&) = delete;

    c10::intrusive_ptr<c10d::Store> store;
    int64_t world = 1;
    bool serving = false;
};

#ifdef PDSD_WITH_NCCL
// distributed_nccl.cpp: a ProcessGroupNCCL over the session's store, on `device` (CUDA).
std::unique_ptr<DataParallel> make_nccl_data_parallel(const DistEnv& env, std::chrono::milliseconds timeout,
                                                      const c10::Device& device);
#endif

}  // namespace pdsd::train
