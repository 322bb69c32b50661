// The NCCL backend of DataParallel (CUDA builds with nccl.h; see distributed.h): gradients are
// summed on the GPUs by ProcessGroupNCCL, the process group libtorch's DDP uses, instead of
// travelling through the host store.
#include "distributed_session.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace pdsd::train {
namespace {

class NcclDataParallel final : public DataParallel {
public:
    NcclDataParallel(const DistEnv& env, std::chrono::milliseconds timeout, const c10::Device& device)
        : rank_(env.rank), world_(env.world_size), device_(device), session_(env, timeout) {
        c10::cuda::set_device(device.index());  // NCCL binds the communicator to the current device
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        try {
            pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", session_.store),
                                                             static_cast<int>(rank_), static_cast<int>(world_), opts);
            barrier();  // the communicator is created lazily, by the first collective
        } catch (const c10::Error& e) {
            throw IoError(ErrorInfo{}.at("NCCL process group, rank " + std::to_string(rank_) + " on " + device.str())
                              .msg(e.what_without_backtrace())
                              .hint("NCCL_DEBUG=INFO says more; PDSD_DIST_BACKEND=store sums through the host instead"));
        }
        log::info("dist", log::cat("rank ", rank_, " of ", world_, " joined ", env.master_addr, ":", env.master_port,
                                   " (NCCL all-reduce on ", device.str(), ")"));
    }

    ~NcclDataParallel() override {
        try {
            pg_->shutdown();  // before the store goes: NCCL's watchdog may still talk to it
        } catch (const std::exception&) {
        }
    }

    int64_t rank() const override { return rank_; }
    int64_t world_size() const override { return world_; }

    // NCCL reduces the same ring on every rank, so every rank receives the same bits. The
    // trainer passes fp64 buffers; NCCL sums them in fp64.
    void all_reduce_sum(at::Tensor& t) override {
        at::Tensor buf = t.device() == device_ && t.is_contiguous() ? t : t.to(device_).contiguous();
        std::vector<at::Tensor> v{buf};
        c10d::AllreduceOptions o;
        o.reduceOp = c10d::ReduceOp::SUM;
        pg_->allreduce(v, o)->wait();  // orders the current stream after the reduction
        if (!buf.is_same(t)) t.copy_(buf);
    }

    void barrier() override {
        at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kDouble).device(device_));
        all_reduce_sum(one);
        (void)one.item<double>();  // the host waits too
    }

private:
    int64_t rank_, world_;
    c10::Device device_;
    StoreSession session_;
    c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
};

}  // namespace

std::unique_ptr<DataParallel> make_nccl_data_parallel(const DistEnv& env, std::chrono::milliseconds timeout,
                                                      const c10::Device& device) {
    return std::make_unique<NcclDataParallel>(env, timeout, device);
}

}  // namespace pdsd::train
