// Logits of a Qwen2 base with a trained LoRA adapter attached the way `pdsd train` attaches it
// (lora::attach_lora + LoraAttachment::load, unmerged: W x + s B A x), for oracle checks against
// PEFT (`pdsd model logits`, scripts/oracle/peft_logits_check.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pdsd::train {

struct LogitsDumpOptions {
    std::string model_dir;                    // HF Qwen2 folder
    std::string adapter_dir;                  // PEFT adapter folder; empty = base model only
    std::vector<std::vector<int64_t>> rows;   // token ids, one sequence per row (right-padded to the longest)
    // QLoRA's base (LLaMA-Factory's keys, model/qlora_base.h): 4 or 8 = the decoder projections
    // stored in 4 / 8 bits before the adapter is attached, as `pdsd train --quantization_bit N`
    // trains it; 0 = float.
    int64_t quantization_bit = 0;
    std::string quantization_type = "nf4";    // nf4 | fp4 (4 only)
    bool double_quantization = true;          // 4 only
    std::string out_path;                     // safetensors: "logits" fp32 (rows, T, V), "input_ids" int64, "attention_mask" int64
};

// fp32 on CPU, eval mode (no dropout). Throws UsageError on empty rows, ShapeError on ids >= vocab.
void dump_logits(const LogitsDumpOptions& options);

}  // namespace pdsd::train
