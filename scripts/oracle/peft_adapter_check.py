#!/usr/bin/env python3
"""Oracle for `pdsd train`'s saved adapter: PEFT reloads it and gives pdsd's logits.

  peft_adapter_check.py BASE_DIR ADAPTER_DIR PDSD_LOGITS.safetensors [--nf4 nf4|fp4 [--double-quant]]

PDSD_LOGITS comes from `pdsd model logits --model BASE_DIR --adapter ADAPTER_DIR --ids ...`
(base + lora::attach_lora, unmerged, fp32 CPU). Here transformers loads BASE_DIR in fp32,
`PeftModel.from_pretrained` attaches ADAPTER_DIR, and the logits of the same ids / mask are
compared on the real (unpadded) positions: max |diff| must be below 1e-4. Also checked: the
adapter is not a no-op (PEFT vs bare base differ by more than 1e-3), so the comparison
covers the trained LoRA weights. Exit 1 on failure, 77 when torch / transformers / peft /
safetensors are missing.

--nf4 (QLoRA, `pdsd train --quantization_bit 4`): before PEFT attaches the adapter, every
decoder projection of the base is replaced by its 4-bit round trip made with bitsandbytes' own
reference kernels (tests/model/make_nf4_golden.py; bitsandbytes' native CPU kernels are off
for some shapes, see there), i.e. the dequantized base that bitsandbytes' Linear4bit computes
with; pdsd's logits come from `pdsd model logits --quantization_bit 4`. The 4-bit base must
also differ from the float one, so the check covers the quantization.
"""
import os
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
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_base(model, quant_type, double_quant):
    """The projections' weights replaced by bitsandbytes' dequantize(quantize(W)); returns the
    largest change."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "model"))
    from make_nf4_golden import dequantize, quantize  # noqa: E402 (needs bitsandbytes)
    worst = 0.0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.split(".")[-1] in PROJECTIONS:
                w = mod.weight.data
                packed, stats = quantize(w, quant_type, double_quant)
                d = dequantize(packed, stats, quant_type, w.shape, w.dtype)
                worst = max(worst, (d - w).abs().max().item())
                w.copy_(d)
    return worst


def main():
    base_dir, adapter_dir, pdsd_file = sys.argv[1:4]
    nf4 = sys.argv[sys.argv.index("--nf4") + 1] if "--nf4" in sys.argv else None
    got = load_file(pdsd_file)
    ids, mask, pdsd_logits = got["input_ids"], got["attention_mask"], got["logits"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    quant_effect = None
    if nf4:
        with torch.no_grad():
            float_logits = base(input_ids=ids, attention_mask=mask).logits
        worst = quantize_base(base, nf4, "--double-quant" in sys.argv)
        with torch.no_grad():
            quant_effect = (base(input_ids=ids, attention_mask=mask).logits - float_logits).abs()[mask.bool()].max().item()
        print(f"base in 4-bit {nf4}{' (double quantization)' if '--double-quant' in sys.argv else ''}: largest weight change "
              f"{worst:.3g}, logits change {quant_effect:.3g}")
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
    ok = diff < TOL and effect > 1e-3 and n_lora > 0 and (quant_effect is None or quant_effect > 10 * TOL)
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
