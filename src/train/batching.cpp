// Examples, epoch order and micro-batches; see batching.h.
#include "pdsd/train/batching.h"

#include "pdsd/core/file_util.h"
#include "pdsd/train/loss.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace pdsd::train {

Batch collate(const std::vector<Example>& data, const std::vector<int64_t>& idx, int64_t pad_id, const c10::Device& dev) {
    size_t maxlen = 0;
    for (int64_t i : idx) maxlen = std::max(maxlen, data[i].ids.size());
    const int64_t T = static_cast<int64_t>((maxlen + 7) / 8 * 8), B = static_cast<int64_t>(idx.size());
    at::Tensor ids = at::full({B, T}, pad_id, at::kLong), mask = at::zeros({B, T}, at::kLong),
               lab = at::full({B, T}, kIgnoreIndex, at::kLong);
    auto ia = ids.accessor<int64_t, 2>();
    auto ma = mask.accessor<int64_t, 2>();
    auto la = lab.accessor<int64_t, 2>();
    Batch b;
    for (int64_t r = 0; r < B; ++r) {
        const Example& e = data[idx[r]];
        for (size_t t = 0; t < e.ids.size(); ++t) {
            ia[r][t] = e.ids[t];
            ma[r][t] = 1;
            la[r][t] = e.labels[t];
        }
        b.targets += e.targets;
        b.tokens += static_cast<int64_t>(e.ids.size());
    }
    // Asynchronous copies: from pageable memory CUDA stages the bytes right away, so the host
    // tensors may go, and nothing waits for the GPU work still queued (a plain copy would
    // synchronise the stream at every micro-batch).
    b.input_ids = ids.to(dev, /*non_blocking=*/true);
    b.attention_mask = mask.to(dev, /*non_blocking=*/true);
    b.labels = lab;
    return b;
}

std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(static_cast<uint64_t>(seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), rng);
    return order;
}

std::string data_fingerprint(const std::vector<Example>& all) {
    std::string acc;
    for (const auto& e : all) {
        acc.append(reinterpret_cast<const char*>(e.ids.data()), e.ids.size() * sizeof(int32_t));
        acc.append(reinterpret_cast<const char*>(e.labels.data()), e.labels.size() * sizeof(int32_t));
        acc.push_back('\n');
    }
    return sha256_hex(acc);
}

}  // namespace pdsd::train
