// The work scheduler of the CPU decode kernels (model/cpu_decode.cpp, model/quant.cpp): every
// row of every weight segment, cut into chunks of kRows rows within its segment, taken by the
// intra-op threads from one shared counter until none is left, so a thread that started late
// or streams slower takes fewer. A call of one chunk runs inline (no thread handoff).
// Include only from files built with OpenMP flags: at::parallel_for's pragma is compiled here.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

namespace pdsd::model {

// fn(segment, first row, rows, dots, dots2): dots and dots2 are the calling thread's scratch,
// (M, kRows) fp32 each, reused across its chunks. rows_of(segment) is that segment's row count.
template <int64_t kRows, class RowsOf, class Fn>
void for_each_row_chunk(size_t n_segments, const RowsOf& rows_of, int64_t M, const Fn& fn) {
    std::vector<std::pair<size_t, int64_t>> chunks;  // (segment, first row)
    for (size_t i = 0; i < n_segments; ++i) {
        for (int64_t r = 0, n = rows_of(i); r < n; r += kRows) chunks.emplace_back(i, r);
    }
    const auto n_chunks = static_cast<int64_t>(chunks.size());
    std::atomic<int64_t> next{0};
    auto worker = [&](int64_t, int64_t) {
        std::vector<float> dots(static_cast<size_t>(M * kRows)), dots2(dots.size());
        for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
            const auto [seg, r0] = chunks[static_cast<size_t>(c)];
            fn(seg, r0, std::min(kRows, rows_of(seg) - r0), dots.data(), dots2.data());
        }
    };
    if (n_chunks <= 1) {
        worker(0, 1);
    } else {
        at::parallel_for(0, at::get_num_threads(), 1, worker);
    }
}

}  // namespace pdsd::model
