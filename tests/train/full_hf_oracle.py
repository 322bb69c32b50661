#!/usr/bin/env python3
"""Oracle for `pdsd train --finetuning_type full`'s output folder: transformers loads it as a
plain HF model and gives pdsd's logits.

  full_hf_oracle.py BASE_DIR OUT_DIR PDSD_LOGITS.safetensors

PDSD_LOGITS comes from `pdsd model logits --model OUT_DIR --ids ...` (fp32 CPU). transformers
loads OUT_DIR (sharded or single safetensors, config.json, tokenizer) in fp32; the logits of
the same ids / mask must agree within 1e-4 on the real positions, and differ from the base
model's by more than 1e-3 (the folder holds the trained weights, not the base). The tokenizer
must load with AutoTokenizer too. Exit 1 on failure, 77 when the packages are missing.
"""
import sys

try:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
except Exception as e:  # noqa: BLE001
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4


def logits_of(path, ids, mask):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask).logits


def main():
    base_dir, out_dir, pdsd_file = sys.argv[1:4]
    got = load_file(pdsd_file)
    ids, mask, pdsd_logits = got["input_ids"], got["attention_mask"], got["logits"]
    ref = logits_of(out_dir, ids, mask)
    base = logits_of(base_dir, ids, mask)
    tok = AutoTokenizer.from_pretrained(out_dir)
    real = mask.bool()
    diff = (ref - pdsd_logits).abs()[real].max().item()
    effect = (ref - base).abs()[real].max().item()
    print(f"transformers loaded {out_dir} (tokenizer vocab {len(tok)}); logits {tuple(ref.shape)}: "
          f"max |pdsd - HF| = {diff:.3g} (tolerance {TOL:g}); training effect max |trained - base| = {effect:.3g}")
    ok = diff < TOL and effect > 1e-3
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
