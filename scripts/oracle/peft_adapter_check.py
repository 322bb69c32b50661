#!/usr/bin/env python3
"""Oracle for `pdsd train`'s saved adapter: PEFT reloads it and gives pdsd's logits.

  peft_adapter_check.py BASE_DIR ADAPTER_DIR PDSD_LOGITS.safetensors [--nf4 nf4|fp4 [--double-quant] | --int8]

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

--int8 (8-bit QLoRA, `pdsd train --quantization_bit 8`): the same with bitsandbytes' Int8Params
(CB, SCB) and the weight its Linear8bitLt trains with on CPU (tests/model/make_int8_golden.py),
i.e. the dequantized int8 base; pdsd's logits come from `pdsd model logits --quantization_bit 8`.
bitsandbytes' LLM.int8 inference matmul (activations quantized too, outlier columns >= 6.0 kept
in fp16) is not this base: its distance from it is printed for information only.
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


def golden_module(name):
    """tests/model/make_*_golden.py (needs bitsandbytes)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "model"))
    return __import__(name)


def nf4_round_trip(quant_type, double_quant):
    g = golden_module("make_nf4_golden")

    def trip(w):
        packed, stats = g.quantize(w, quant_type, double_quant)
        return g.dequantize(packed, stats, quant_type, w.shape, w.dtype)
    return trip


def int8_round_trip():
    g = golden_module("make_int8_golden")

    def trip(w):
        cb, scb = g.quantize(w)
        return g.trained_weight(w, cb, scb, w.dtype)
    return trip


def quantize_base(model, trip):
    """The projections' weights replaced by trip(W), bitsandbytes' dequantize(quantize(W));
    returns the largest change."""
    worst = 0.0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.split(".")[-1] in PROJECTIONS:
                w = mod.weight.data
                d = trip(w)
                worst = max(worst, (d - w).abs().max().item())
                w.copy_(d)
    return worst


def llm_int8_distance(base_dir, adapter_dir, ids, mask, ref):
    """max |PEFT on bitsandbytes' own Linear8bitLt (LLM.int8 inference matmul, threshold 6.0) -
    PEFT on the dequantized int8 base|, or None where this bitsandbytes / PEFT cannot run it."""
    try:
        import bitsandbytes as bnb
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        for name, mod in list(model.named_modules()):
            for child_name, child in list(mod.named_children()):
                if child_name in PROJECTIONS and isinstance(child, torch.nn.Linear):
                    lin = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                              has_fp16_weights=False, threshold=6.0)
                    lin.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
                    if child.bias is not None:
                        lin.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                    setattr(mod, child_name, lin.to("cpu"))
        peft = PeftModel.from_pretrained(model, adapter_dir)
        peft.eval()
        with torch.no_grad():
            got = peft(input_ids=ids, attention_mask=mask).logits.float()
        return (got - ref).abs()[mask.bool()].max().item()
    except Exception as e:  # noqa: BLE001 (information only)
        print(f"(LLM.int8 matmul not run: {type(e).__name__}: {e})")
        return None


def main():
    base_dir, adapter_dir, pdsd_file = sys.argv[1:4]
    nf4 = sys.argv[sys.argv.index("--nf4") + 1] if "--nf4" in sys.argv else None
    int8 = "--int8" in sys.argv
    got = load_file(pdsd_file)
    ids, mask, pdsd_logits = got["input_ids"], got["attention_mask"], got["logits"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    quant_effect = None
    if nf4 or int8:
        with torch.no_grad():
            float_logits = base(input_ids=ids, attention_mask=mask).logits
        dq = "--double-quant" in sys.argv
        trip = int8_round_trip() if int8 else nf4_round_trip(nf4, dq)
        worst = quantize_base(base, trip)
        with torch.no_grad():
            quant_effect = (base(input_ids=ids, attention_mask=mask).logits - float_logits).abs()[mask.bool()].max().item()
        what = "8-bit int8 rows" if int8 else f"4-bit {nf4}{' (double quantization)' if dq else ''}"
        print(f"base in {what}: largest weight change {worst:.3g}, logits change {quant_effect:.3g}")
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
    if int8:
        d = llm_int8_distance(base_dir, adapter_dir, ids, mask, ref)
        if d is not None:
            print(f"information: bitsandbytes' LLM.int8 matmul (int8 activations, threshold 6.0) is {d:.3g} from this base's logits")
    ok = diff < TOL and effect > 1e-3 and n_lora > 0 and (quant_effect is None or quant_effect > 10 * TOL)
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
