#!/usr/bin/env python3
"""Golden for pdsd's NF4/FP4 block quantization (model/nf4.h), made with bitsandbytes itself.

  tests/model/make_nf4_golden.py OUT.safetensors

For each case NAME (shape, dtype, quant type, double quantization) the file holds NAME.w (the
input), NAME.packed (uint8, bitsandbytes' packed indices), NAME.absmax (fp32: the per-block
absmax, or with double quantization the 8-bit indices as NAME.qabsmax plus NAME.absmax2 and
NAME.offset), NAME.deq (bitsandbytes.functional.dequantize_4bit in the input's dtype), and
dynamic_map (create_dynamic_map(signed=True)), all from bitsandbytes' reference kernels. Shapes include a short last block and an odd
element count. The vendored copy (tests/fixtures/golden/nf4_bnb.safetensors) was made with
bitsandbytes 0.50.2 + torch 2.11.0 on CPU; oracle_nf4_bnb makes a fresh one and checks pdsd
against it where bitsandbytes is installed.
"""
import sys

import torch
import bitsandbytes.functional as F
from safetensors.torch import save_file

CASES = [  # name, shape, dtype, quant_type, double quantization
    ("nf4_f32", (64, 96), torch.float32, "nf4", False),
    ("nf4_bf16_dq", (96, 200), torch.bfloat16, "nf4", True),      # 300 blocks: two absmax2 blocks
    ("nf4_f16_tail", (33, 65), torch.float16, "nf4", False),      # 2145 values: short last block, odd count
    ("fp4_f32_dq", (40, 64), torch.float32, "fp4", True),
    ("nf4_f32_dq_tail", (257, 64), torch.float32, "nf4", True),
]


# bitsandbytes' reference kernels (its "default" backend, pure torch), reached past the native
# CPU ones: 0.50.2's CPU dequantize_4bit indexes the absmaxes per row (wrong values when a
# row's length is not a multiple of the blocksize, e.g. (64, 96) in blocks of 64, while its
# quantize_4bit reads the tensor as one vector), and its CPU quantize_blockwise sometimes
# takes the farther of two code values (1 of the 257 absmaxes of nf4_f32_dq_tail).
REFERENCE = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def ref(op, *args):
    return getattr(torch.ops.bitsandbytes, op).default.redispatch(REFERENCE, *args)


def quantize(w, quant_type, double_quant):
    """functional.quantize_4bit's steps (blocks of 64; compress_statistics = double_quant)."""
    packed, absmax = ref("quantize_4bit", w, 64, quant_type, torch.uint8)
    if not double_quant:
        return packed, {"absmax": absmax}
    offset = absmax.mean()
    qabsmax, absmax2 = ref("quantize_blockwise", absmax - offset, F.create_dynamic_map(signed=True), 256)
    return packed, {"qabsmax": qabsmax, "absmax2": absmax2, "offset": offset.reshape(1)}


def dequantize(packed, stats, quant_type, shape, dtype):
    """functional.dequantize_4bit's steps."""
    if "absmax" in stats:
        absmax = stats["absmax"]
    else:
        absmax = ref("dequantize_blockwise", stats["qabsmax"], stats["absmax2"], F.create_dynamic_map(signed=True),
                     256, torch.float32) + stats["offset"]
    return ref("dequantize_4bit", packed, absmax.float(), 64, quant_type, list(shape), dtype)


def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(20261204)
    t = {"dynamic_map": F.create_dynamic_map(signed=True).float().contiguous()}
    for name, shape, dtype, qt, dq in CASES:
        w = (torch.randn(shape, generator=g) * 0.05).to(dtype)
        w[0, :3] = 0  # exact zeros, and a block with one large outlier
        w[1, 5] = 0.9
        packed, stats = quantize(w, qt, dq)
        t[f"{name}.w"] = w.contiguous()
        t[f"{name}.packed"] = packed.reshape(-1).contiguous()
        for k, v in stats.items():
            t[f"{name}.{k}"] = v.float().reshape(-1).contiguous() if k != "qabsmax" else v.reshape(-1).contiguous()
        t[f"{name}.deq"] = dequantize(packed, stats, qt, w.shape, dtype).contiguous()
    import bitsandbytes
    save_file(t, out, metadata={"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__})
    print(f"wrote {out}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
