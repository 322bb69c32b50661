#!/usr/bin/env python3
"""llama.cpp peer for `pdsd model bench` (llama-cpp-python): same random prompt length, greedy
decode with llama.cpp's KV cache, batch 1. Prefill = one llama_decode of the prompt (logits
of the last position only); decode = one token per step, argmax of the last logits.
Prints one JSON line with the same keys as `pdsd model bench`.

  llama_cpp_bench.py --model model-bf16.gguf [--prompt-len 128] [--new 32] [--threads 2] [--runs 3]
"""
import argparse
import json
import time

import numpy as np
import llama_cpp.llama_cpp as llama_c
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--prompt-len", type=int, default=128)
ap.add_argument("--new", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--no-extra-bufts", action="store_true",
                help="disable llama.cpp's repacked/AMX weight buffers (its AMX Q8_0 kernel crashes on this VM)")
a = ap.parse_args()
if a.no_extra_bufts:
    _default_params = llama_c.llama_model_default_params

    def _params():
        p = _default_params()
        p.use_extra_bufts = False
        return p

    llama_c.llama_model_default_params = _params
n_ctx = a.prompt_len + a.new + 16
# n_batch >= n_ctx: without logits_all, llama-cpp-python keeps `scores` as (n_batch, vocab) yet
# writes the last logits at row n_tokens - 1, which overflows once the cache outgrows n_batch.
llm = Llama(model_path=a.model, n_ctx=n_ctx, n_batch=max(512, n_ctx), n_ubatch=max(512, a.prompt_len),
            n_threads=a.threads, n_threads_batch=a.threads, logits_all=False, verbose=False)
rng = np.random.default_rng(0)
ids = rng.integers(0, min(llm.n_vocab(), 151643), a.prompt_len).tolist()
best_p, best_d = 1e30, 1e30
for run in range(a.runs + 1):  # run 0 warms up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t1 = time.perf_counter()
    for _ in range(a.new - 1):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t2 = time.perf_counter()
    if run:
        best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
print(json.dumps({"impl": "llama.cpp (llama-cpp-python)", "model": a.model, "threads": a.threads,
                  "prompt_len": a.prompt_len, "new_tokens": a.new, "prefill_s": best_p, "decode_s": best_d,
                  "prefill_tokens_per_s": a.prompt_len / best_p,
                  "decode_tokens_per_s": (a.new - 1) / best_d if a.new > 1 else 0.0}))
