#!/usr/bin/env python3
"""HF transformers peer for `pdsd model bench`: same folder, same random prompt length,
greedy decode with the KV cache, eos ignored. Prefill = one forward of the prompt with
logits for the last position only (what model.generate does); decode = one token per step.
Prints one JSON line with the same keys as `pdsd model bench`."""
import argparse, json, time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--prompt-len", type=int, default=128)
ap.add_argument("--new", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--device", default="cpu")
ap.add_argument("--dtype", default="fp32")
a = ap.parse_args()
torch.set_num_threads(a.threads)
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa").to(a.device).eval()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, min(model.config.vocab_size, 151643), (a.batch, a.prompt_len), generator=g).to(a.device)


def sync():
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()


best_p, best_d = 1e30, 1e30
with torch.inference_mode():
    for run in range(a.runs + 1):
        t0 = time.perf_counter()
        out = model(ids, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        tok.cpu()
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(a.new - 1):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            tok.cpu()
        t2 = time.perf_counter()
        if run:
            best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
print(json.dumps({"impl": "hf-transformers", "threads": a.threads, "batch": a.batch, "prompt_len": a.prompt_len,
                  "new_tokens": a.new, "prefill_s": best_p, "decode_s": best_d,
                  "prefill_tokens_per_s": a.batch * a.prompt_len / best_p,
                  "decode_tokens_per_s": a.batch * (a.new - 1) / best_d if a.new > 1 else 0.0}))
