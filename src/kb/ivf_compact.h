// A compact copy (fp16 or int8 codes) of an inner-product IVF index (FAISS IndexIVFFlat)
// for the single-query search path, scanned with AVX-512 kernels (runtime-dispatched).
//
// Why: FAISS here is Debian's generic build (no AVX2/AVX-512 kernels) and a 1024-d float
// vector is 4 KB, so IVF search is bound by memory traffic. fp16 codes halve the bytes
// scanned, int8 codes (one fp32 scale per vector) quarter them; both are scanned with
// 512-bit integer/FMA kernels (docs/benchmarks.md, "Knowledge base").
//
// Result contract: the probed lists are chosen exactly as FAISS does (fp32 centroid
// scores, best nprobe); within them the compact scores pick the best R candidates
// (fp16: k + 32; int8: 2k + 64), which are then rescored with the fp32 vectors. Returned
// scores are therefore the exact fp32 inner products; the id set can differ from FAISS's
// only when a code's rounding error (fp16: ~1e-3, int8: ~1e-2 of a unit-vector cosine
// at worst) pushes a true top-k vector below R others.
// The object keeps pointers into the source index's float lists and centroids: the
// source must outlive it and must not be modified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pdsd::kb::detail {

class CompactIvf {
public:
    enum class Codes { fp16, int8 };
    struct List {
        const float* codes = nullptr;     // [size x dim] fp32, row-major
        const int64_t* ids = nullptr;     // [size]
        size_t size = 0;
    };
    // True when this CPU runs the kernels (fp16: AVX-512F, dim % 16 == 0; int8:
    // AVX-512F + BW, dim % 32 == 0).
    static bool supported(Codes codes, size_t dim);
    // centroids: [lists.size() x dim] fp32. Throws InternalError when !supported().
    CompactIvf(Codes codes, size_t dim, const float* centroids, const std::vector<List>& lists);

    // Top k by inner product with q [dim]; dist/labels [k], best first (ties: lower id
    // first); unfilled slots get label -1 and dist -inf. nprobe is clamped to [1, nlist].
    void search(const float* q, size_t nprobe, size_t k, float* dist, int64_t* labels) const;

    Codes codes() const { return codes_; }
    size_t bytes() const { return half_.size() * 2 + int8_.size() + scale_.size() * 4; }

private:
    Codes codes_;
    size_t dim_ = 0;
    const float* centroids_ = nullptr;
    std::vector<List> lists_;
    std::vector<size_t> offset_;      // [nlist + 1] first row of each list, list by list
    std::vector<uint16_t> half_;      // fp16: [ntotal x dim]
    std::vector<int8_t> int8_;        // int8: [ntotal x dim], row r = round(x / scale_[r])
    std::vector<float> scale_;        // int8: [ntotal] max |x_i| / 127
};

}  // namespace pdsd::kb::detail
