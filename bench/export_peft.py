#!/usr/bin/env python3
"""The peer for bench/export_bench.sh: what `llamafactory-cli export` does for a LoRA —
load the base in its config dtype, PeftModel.from_pretrained, merge_and_unload,
save_pretrained(max_shard_size="5GB") — timed inside Python too.

  export_peft.py BASE ADAPTER OUT
"""
import sys
import time

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base, adapter, out = sys.argv[1:4]
t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out, max_shard_size="5GB")
print(f"peft merge_and_unload + save_pretrained: {time.time() - t0:.2f} s")
