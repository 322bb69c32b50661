#!/usr/bin/env python3
"""sentence-transformers CrossEncoder.predict throughput on a pairs JSONL (bench/rerank_bench.sh).

  rerank_st.py MODEL_DIR PAIRS_JSONL MAX_LENGTH [--batch 32]   prints pairs/s and writes no file
"""
import argparse, json, time

import torch
from sentence_transformers import CrossEncoder

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("pairs")
ap.add_argument("max_length", type=int)
ap.add_argument("--batch", type=int, default=32)
a = ap.parse_args()
pairs = [json.loads(l) for l in open(a.pairs, encoding="utf-8") if l.strip()]
pairs = [[p["query"], p["document"]] for p in pairs]
ce = CrossEncoder(a.model, max_length=a.max_length, device="cpu")
ce.predict(pairs[:4], batch_size=a.batch, show_progress_bar=False)   # warm-up (first-call allocations)
t0 = time.perf_counter()
scores = ce.predict(pairs, batch_size=a.batch, show_progress_bar=False)
s = time.perf_counter() - t0
print(json.dumps({"pairs": len(pairs), "seconds": s, "pairs_per_s": len(pairs) / s, "threads": torch.get_num_threads(),
                  "first_scores": [float(x) for x in scores[:4]]}))
