#!/usr/bin/env python3
"""Golden for pdsd's row-wise int8 storage (model/int8_rows.h), made with bitsandbytes itself.

  tests/model/make_int8_golden.py OUT.safetensors

For each case NAME (shape, dtype) the file holds NAME.w (the input), NAME.CB (int8) and NAME.SCB
(fp32) as bitsandbytes' Int8Params quantizes w when it moves to a device (what transformers'
load_in_8bit does to every Linear8bitLt weight), NAME.deq (the dequantized weight, in w's dtype)
and NAME.deq_f32 (the same in fp32) that bitsandbytes multiplies by when it trains through
Linear8bitLt on CPU (autograd MatMul8bitFp). The deq values are read back out of that very
layer (its forward on an identity matrix returns W'^T), not recomputed here. Cases include an
all-zero row, a row of exact rounding ties, and values below fp16's normal range. The vendored
copy (tests/fixtures/golden/int8_bnb.safetensors) was made with bitsandbytes 0.50.2 + torch
2.11.0 on CPU; oracle_int8_bnb makes a fresh one and checks pdsd against it.
"""
import sys

import torch
import bitsandbytes as bnb
from safetensors.torch import save_file

CASES = [  # name, shape, dtype
    ("int8_f32", (64, 96), torch.float32),
    ("int8_bf16", (96, 200), torch.bfloat16),
    ("int8_f16", (33, 65), torch.float16),
    ("int8_f32_tiny", (16, 64), torch.float32),  # fp16 subnormals and values fp16 flushes to 0
]


def quantize(w):
    """Int8Params' own quantization (fp16 copy -> int8_vectorwise_quant): (CB, SCB)."""
    p = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
    return p.CB, p.SCB


def trained_weight(w, CB, SCB, dtype):
    """The weight a CPU Linear8bitLt in training mode computes with: its output for the identity."""
    n, k = w.shape
    layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(CB.clone(), requires_grad=False, has_fp16_weights=False)
    layer.weight.CB, layer.weight.SCB = CB.clone(), SCB.clone()
    layer.train()
    with torch.no_grad():
        return layer(torch.eye(k, dtype=dtype)).t().contiguous()


def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(20261204)
    t = {}
    for name, shape, dtype in CASES:
        w = torch.randn(shape, generator=g) * (1e-6 if name.endswith("tiny") else 0.05)
        w[0, :3] = 0  # exact zeros, and a row with one large outlier
        w[1, 5] = 0.9
        if name.endswith("tiny"):
            w[2, :8] = 1e-8  # below fp16's smallest subnormal: 0 after the fp16 copy
        else:
            w[3] = 0  # an all-zero row: SCB 0, CB 0
            ties = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5])  # scale exactly 1
            w[4] = 0
            w[4, : len(ties)] = ties
        w = w.to(dtype)
        CB, SCB = quantize(w)
        t[f"{name}.w"] = w.contiguous()
        t[f"{name}.CB"] = CB.contiguous()
        t[f"{name}.SCB"] = SCB.contiguous()
        t[f"{name}.deq"] = trained_weight(w, CB, SCB, dtype)
        t[f"{name}.deq_f32"] = trained_weight(w, CB, SCB, torch.float32)
    save_file(t, out, metadata={"bitsandbytes": bnb.__version__, "torch": torch.__version__})
    print(f"wrote {out}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
