// SFT examples, their order and their micro-batches: the data side of the trainer
// (train/trainer.h), kept apart from the model so each can be read and tested alone.
// Shapes: B micro-batch size, T padded sequence length.
#pragma once

#include <c10/core/Device.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::train {

// One tokenized conversation (LF `qwen` template): ids and labels (-100 = not a target).
struct Example {
    std::vector<int32_t> ids, labels;
    int64_t targets = 0;  // labels[1:] != -100
};

struct Batch {
    at::Tensor input_ids, attention_mask;  // (B, T) int64 on the device
    at::Tensor labels;                     // (B, T) int64 on the host (the loss finds targets there)
    int64_t targets = 0;                   // shifted target tokens
    int64_t tokens = 0;                    // real (unpadded) tokens
};

// Right-padded micro-batch of data[idx...]; length rounded up to a multiple of 8 (LF's
// pad_to_multiple_of), padding = pad_id with mask 0 and label -100.
Batch collate(const std::vector<Example>& data, const std::vector<int64_t>& idx, int64_t pad_id, const c10::Device& dev);

// The seeded permutation of epoch `epoch` of n examples (same on every run and after resume;
// epoch -1 is the val_size split's): mt19937_64(seed * 1000003 + epoch).
std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch);

// sha256 of every example's ids and labels (resume refuses other data).
std::string data_fingerprint(const std::vector<Example>& all);

// n examples, micro-batches of bs, accum micro-batches per optimizer step.
struct Layout {
    int64_t n = 0, bs = 1, accum = 1;
    int64_t micro_per_epoch() const { return (n + bs - 1) / bs; }
    int64_t steps_per_epoch() const { return (micro_per_epoch() + accum - 1) / accum; }
    // Micro-batch range [first, last) of step j (0-based) within its epoch.
    std::pair<int64_t, int64_t> micro_range(int64_t j) const {
        return {j * accum, std::min(micro_per_epoch(), (j + 1) * accum)};
    }
};

}  // namespace pdsd::train
