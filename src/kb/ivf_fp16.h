// A half-precision copy of an inner-product IVF index (FAISS IndexIVFFlat) for the
// single-query search path, scanned with AVX-512 kernels (runtime-dispatched).
//
// Why: FAISS here is Debian's generic build (no AVX2/AVX-512 kernels) and a 1024-d float
// vector is 4 KB, so IVF search is bound by memory traffic and scalar-ish arithmetic.
// Half the bytes (fp16) scanned with 16-wide FMAs cuts the scan several-fold
// (docs/benchmarks.md, "Knowledge base").
//
// Result contract: the probed lists are chosen exactly as FAISS does (fp32 centroid
// scores, best nprobe); within them the fp16 scores pick the best `k + rerank_extra`
// candidates, which are then rescored with the fp32 vectors. Returned scores are
// therefore the exact fp32 inner products; the id set can differ from FAISS's only when
// an fp16 rounding error (|error| <= ~1e-3 for unit vectors) pushes a true top-k vector
// below k + rerank_extra others, which the rerank margin makes vanishingly rare.
// The object keeps pointers into the source index's float lists and centroids: the
// source must outlive it and must not be modified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pdsd::kb::detail {

class Fp16Ivf {
public:
    struct List {
        const float* codes = nullptr;     // [size x dim] fp32, row-major
        const int64_t* ids = nullptr;     // [size]
        size_t size = 0;
    };
    // True when this CPU runs the AVX-512 kernels and `dim` is a multiple of 16.
    static bool supported(size_t dim);
    // centroids: [lists.size() x dim] fp32. Throws InternalError when !supported(dim).
    Fp16Ivf(size_t dim, const float* centroids, const std::vector<List>& lists);

    // Top k by inner product with q [dim]; dist/labels [k], best first (ties: lower id
    // first); unfilled slots get label -1 and dist -inf. nprobe is clamped to [1, nlist].
    void search(const float* q, size_t nprobe, size_t k, float* dist, int64_t* labels) const;

    size_t rerank_extra = 32;   // extra fp16 candidates rescored in fp32
    size_t bytes() const { return half_.size() * sizeof(uint16_t); }

private:
    size_t dim_ = 0;
    const float* centroids_ = nullptr;
    std::vector<List> lists_;
    std::vector<size_t> offset_;      // [nlist + 1] first row of each list in half_
    std::vector<uint16_t> half_;      // [ntotal x dim] fp16 copies, list by list
};

}  // namespace pdsd::kb::detail
