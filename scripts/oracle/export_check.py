#!/usr/bin/env python3
"""Oracle for `pdsd export`: load the merged folder with Hugging Face transformers and
compare it with PEFT on the same base + adapter.

  export_check.py BASE ADAPTER MERGED_DIR

Checks (exit 1 on failure, 77 when transformers/peft/torch are missing):
  1. transformers loads MERGED_DIR (config.json, index/shards) as Qwen2ForCausalLM;
  2. every tensor equals PEFT's merge_and_unload() of base(fp32) + adapter, cast to the
     export's dtype, bit for bit;
  3. logits of the merged model (loaded in fp32) vs PEFT's unmerged base + adapter
     (fp32, W x + s B A x) on probe sequences: max |diff| printed and required below
     TOL, a bound for BF16 weight rounding (relative 2^-8 per weight).
"""
import sys

try:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa: BLE001
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float32: 1e-4}


def main():
    base_dir, adapter_dir, merged_dir = sys.argv[1:4]
    torch.manual_seed(0)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    export_dtype = next(iter(AutoModelForCausalLM.from_pretrained(merged_dir).parameters())).dtype
    sd_merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=export_dtype).state_dict()

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, adapter_dir)
    peft.eval()
    vocab = merged.config.vocab_size
    ids = torch.randint(0, vocab, (3, 19))
    with torch.no_grad():
        ref = peft(input_ids=ids).logits
        out = merged(input_ids=ids).logits
    diff = (out - ref).abs().max().item()

    ref_sd = peft.merge_and_unload().state_dict()
    mismatched = [k for k, v in ref_sd.items() if not torch.equal(v.to(export_dtype), sd_merged[k])]
    print(f"export dtype {export_dtype}; tensors {len(sd_merged)}; bit-mismatched vs PEFT merge_and_unload: {len(mismatched)}")
    print(f"max |logits(pdsd merged) - logits(PEFT base+adapter, unmerged)| = {diff:.3g} (tolerance {TOL[export_dtype]})")
    ok = not mismatched and diff <= TOL[export_dtype]
    if mismatched:
        print("mismatched:", mismatched[:10])
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
