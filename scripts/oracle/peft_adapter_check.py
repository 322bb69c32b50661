#!/usr/bin/env python3
"""Oracle for `pdsd train`'s saved adapter: PEFT reloads it and gives pdsd's logits.

  peft_adapter_check.py BASE_DIR ADAPTER_DIR PDSD_LOGITS.safetensors

PDSD_LOGITS comes from `pdsd model logits --model BASE_DIR --adapter ADAPTER_DIR --ids ...`
(base + lora::attach_lora, unmerged, fp32 CPU). Here transformers loads BASE_DIR in fp32,
`PeftModel.from_pretrained` attaches ADAPTER_DIR, and the logits of the same ids / mask are
compared on the real (unpadded) positions: max |diff| must be below 1e-4. Also checked: the
adapter is not a no-op (PEFT vs bare base differ by more than 1e-3), so the comparison
covers the trained LoRA weights. Exit 1 on failure, 77 when torch / transformers / peft /
safetensors are missing.
"""
import sys

try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa: BLE001
    print(f"SKIP: {e}")
    sys.exit(77)

TOL = 1e-4


def main():
    base_dir, adapter_dir, pdsd_file = sys.argv[1:4]
    got = load_file(pdsd_file)
    ids, mask, pdsd_logits = got["input_ids"], got["attention_mask"], got["logits"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids, attention_mask=mask).logits
    peft = PeftModel.from_pretrained(base, adapter_dir)
    peft.eval()
    with torch.no_grad():
        ref = peft(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    diff = (ref - pdsd_logits).abs()[real].max().item()
    effect = (ref - base_logits).abs()[real].max().item()
    n_lora = sum(1 for n, _ in peft.named_parameters() if "lora_" in n)
    print(f"PEFT loaded {n_lora} LoRA tensors; logits {tuple(ref.shape)}: max |pdsd - PEFT| = {diff:.3g} "
          f"(tolerance {TOL:g}); adapter effect max |PEFT - base| = {effect:.3g}")
    ok = diff < TOL and effect > 1e-3 and n_lora > 0
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
