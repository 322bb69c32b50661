#!/usr/bin/env python3
"""sentence-transformers side of bench/embed_bench.sh: encode the chunks with
SentenceTransformer(MODEL_DIR) on CPU (normalize_embeddings, batch 32, as Chatchat's
embeddings do), THREADS intra-op threads, after a 2-text warm-up. Prints one line
"st chunks N seconds S chunks_per_s R" and writes the vectors (float32, row-major) to OUT.
  embed_st.py MODEL_DIR CHUNKS.jsonl OUT.f32 [--threads 2] [--batch 32] [--dtype fp32|bf16]
"""
import argparse, json, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("chunks"); ap.add_argument("out")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
a = ap.parse_args()
torch.set_num_threads(a.threads)
texts = [json.loads(l) for l in open(a.chunks, encoding="utf-8") if l.strip()]
m = SentenceTransformer(a.model, device="cpu")
if a.dtype == "bf16":
    m = m.to(torch.bfloat16)
m.encode(texts[:2], normalize_embeddings=True)
t0 = time.perf_counter()
v = m.encode(texts, batch_size=a.batch, normalize_embeddings=True, convert_to_tensor=True).float().cpu().numpy()
s = time.perf_counter() - t0
v.astype(np.float32).tofile(a.out)
print(f"st_{a.dtype} chunks {len(texts)} seconds {s:.3f} chunks_per_s {len(texts) / s:.3f} torch {torch.__version__} threads {torch.get_num_threads()}")
