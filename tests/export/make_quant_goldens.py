#!/usr/bin/env python3
"""Makes tests/fixtures/golden/gguf-quants (goldens of test_gguf_quants): 2,048 float32 inputs
(8 super-blocks of 256 with different shapes, below) and, per ggml type, the blocks that a
reference quantizer writes for them.

  make_quant_goldens.py OUT_DIR [--ggml PATH/libggml-base.so]

  Q4_0 Q5_0 Q5_1 Q8_0   gguf-py's numpy quantizers (gguf 0.19.0, gguf.quants.quantize)
  Q4_K Q5_K Q6_K        ggml's quantize_row_<type>_ref through ctypes from a libggml-base.so
                        (llama-cpp-python's, scripts/setup_oracles.sh llama, or ggml-quants.c
                        of its sdist built alone); skipped without --ggml. With --ggml the
                        gguf-py bytes of the 32-value types are checked against ggml's too.
  <type>.deq.f32        gguf-py's dequantization of those blocks (an independent reader of the
                        block layout, also for the K types, which gguf-py cannot quantize)
"""
import argparse
import ctypes
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants


def bf16(x):
    """x rounded to bf16 (nearest even), as float32: the values a bf16 checkpoint holds."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def inputs():
    rng = np.random.default_rng(20261204)
    sb = []
    sb.append(rng.standard_normal(256))                                     # 0 N(0, 1)
    sb.append(bf16(rng.standard_normal(256) * 0.02))                        # 1 weight-like, bf16
    sb.append(np.concatenate([rng.standard_normal(32) * 10.0 ** k for k in range(-3, 5)]))  # 2 range
    sb.append(rng.uniform(0.1, 1.0, 256))                                   # 3 all positive
    z = rng.standard_normal(256)
    z[:32] = 0
    z[100:116] = 0
    sb.append(bf16(z))                                                      # 4 zero sub-blocks
    o = rng.standard_normal(256) * 0.01
    o[77] = 5.0
    o[200] = -3.0
    sb.append(bf16(o))                                                      # 5 outliers
    sb.append(np.zeros(256))                                                # 6 all zero
    sb.append(((np.arange(256) % 17) - 8) * 0.125)                          # 7 grid values (ties)
    return np.concatenate(sb).astype(np.float32)


def ggml_ref(lib, name, x, block_bytes, block_values=256):
    f = getattr(lib, f"quantize_row_{name}_ref")
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f.restype = None
    out = np.zeros(x.size // block_values * block_bytes, dtype=np.uint8)
    f(x.ctypes.data, out.ctypes.data, x.size)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ggml", default=None)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    x = inputs()
    x.tofile(os.path.join(a.out, "input.f32"))
    blocks = {}
    for t in (T.Q4_0, T.Q5_0, T.Q5_1, T.Q8_0):
        blocks[t] = quants.quantize(x.reshape(1, -1), t).reshape(-1)
    if a.ggml:
        lib = ctypes.CDLL(a.ggml)
        for t, name, nb in ((T.Q4_K, "q4_K", 144), (T.Q5_K, "q5_K", 176), (T.Q6_K, "q6_K", 210)):
            blocks[t] = ggml_ref(lib, name, x, nb)
        # gguf-py's 32-value quantizers agree with ggml's on these inputs
        for t, name, nb in ((T.Q4_0, "q4_0", 18), (T.Q5_0, "q5_0", 22), (T.Q5_1, "q5_1", 24), (T.Q8_0, "q8_0", 34)):
            assert np.array_equal(ggml_ref(lib, name, x, nb, 32), blocks[t]), f"gguf-py and ggml differ on {name}"
    for t, b in blocks.items():
        b.astype(np.uint8).tofile(os.path.join(a.out, f"{t.name.lower()}.bin"))
        d = quants.dequantize(b.reshape(1, -1), t).reshape(-1).astype(np.float32)
        d.tofile(os.path.join(a.out, f"{t.name.lower()}.deq.f32"))
        print(t.name, b.size, "bytes")


if __name__ == "__main__":
    main()
