// CUDA-graph decode steps; see decode_graph.h. The CUDA parts compile only when libtorch has
// CUDA (PDSD_WITH_CUDA, set by src/CMakeLists.txt), so CPU-only libtorch builds link too.
#include "pdsd/model/decode_graph.h"

#include "pdsd/core/error.h"

#include <ATen/ATen.h>

#ifdef PDSD_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#endif

namespace pdsd::model {

struct DecodeGraph::Impl {
    Qwen2ForCausalLM model{nullptr};
    KVCache* cache = nullptr;
    void* cache_key = nullptr;  // cache->k[0].data_ptr() at construction
    int64_t batch = 0, max_len = 0;
    bool capture = false;
    at::Tensor ids, pos, slot;  // static inputs: (B, 1), (B, 1), (1) int64 on the model's device
    at::Tensor logits;          // (B, V): the graph's output (or the last eager step's)
#ifdef PDSD_WITH_CUDA
    std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif

    at::Tensor run() { return model->decode_fixed(ids, pos, slot, *cache); }
};

bool DecodeGraph::supported(const c10::Device& device) {
#ifdef PDSD_WITH_CUDA
    return device.is_cuda();
#else
    (void)device;
    return false;
#endif
}

DecodeGraph::DecodeGraph(Qwen2ForCausalLM model, KVCache& cache, bool capture) : impl_(std::make_unique<Impl>()) {
    const c10::Device dev = model->options().device();
    if (capture && !supported(dev)) {
        throw InternalError("DecodeGraph: CUDA graphs need a CUDA device and libtorch built with CUDA (device " + dev.str() + ")");
    }
    if (cache.k.empty()) throw InternalError("DecodeGraph: the KV cache is not allocated");
    impl_->model = std::move(model);
    impl_->cache = &cache;
    impl_->cache_key = cache.k[0].data_ptr();
    impl_->batch = cache.batch();
    impl_->max_len = cache.max_len();
    impl_->capture = capture;
    auto lopt = at::TensorOptions().dtype(at::kLong).device(dev);
    impl_->ids = at::zeros({impl_->batch, 1}, lopt);
    impl_->pos = at::zeros({impl_->batch, 1}, lopt);
    impl_->slot = at::zeros({1}, lopt);
}

DecodeGraph::~DecodeGraph() = default;

bool DecodeGraph::matches(const KVCache& cache) const {
    return !cache.k.empty() && cache.k[0].data_ptr() == impl_->cache_key && cache.batch() == impl_->batch &&
           cache.max_len() == impl_->max_len;
}

at::Tensor DecodeGraph::step(const at::Tensor& ids, const at::Tensor& position_ids, int64_t slot) {
    Impl& m = *impl_;
#ifdef PDSD_WITH_CUDA
    std::optional<c10::cuda::CUDAGuard> on_device;  // syncs and streams below use the model's GPU
    if (m.capture) on_device.emplace(m.ids.device());
#endif
    if (slot < 0 || slot >= m.max_len) {
        throw ShapeError(ErrorInfo{}.at("decode step").expected("a cache slot in [0, " + std::to_string(m.max_len) + ")")
                             .found(std::to_string(slot)));
    }
    m.ids.copy_(ids.view({m.batch, 1}));
    m.pos.copy_(position_ids.view({m.batch, 1}));
    m.slot.fill_(slot);
    if (!m.capture) return m.logits = m.run();
#ifdef PDSD_WITH_CUDA
    if (!m.graph) {
        // Warm up on a side stream (cuBLAS handles and workspaces, allocator blocks), then
        // capture there: capture may not run on the legacy default stream. Every warm-up
        // writes the same keys/values at `slot` that the real step writes.
        c10::cuda::device_synchronize();
        {
            c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, m.ids.device().index()));
            for (int i = 0; i < 2; ++i) m.run();
            c10::cuda::device_synchronize();
            m.graph = std::make_unique<at::cuda::CUDAGraph>();
            // Thread-local capture: CUDA calls from other threads (a server's) do not break it.
            m.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
            try {
                m.logits = m.run();
            } catch (...) {
                // End the capture even though it is broken, or the stream stays in capture
                // mode and every later kernel on the device fails.
                try {
                    m.graph->capture_end();
                } catch (...) {
                }
                m.graph.reset();
                throw;
            }
            m.graph->capture_end();
        }
        c10::cuda::device_synchronize();
    }
    m.graph->replay();
    return m.logits;
#else
    throw InternalError("DecodeGraph: built without CUDA");
#endif
}

}  // namespace pdsd::model
