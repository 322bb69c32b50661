#!/usr/bin/env python3
"""Inputs for bench/export_bench.sh: a random-weight Qwen2.5-0.5B (BF16, save_pretrained)
and a random LoRA adapter on it (r=8, alpha=16, q_proj+v_proj, B non-zero), PEFT format.

  export_make_inputs.py OUT_DIR      -> OUT_DIR/base, OUT_DIR/adapter
"""
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

out = sys.argv[1]
torch.manual_seed(0)
# Qwen2.5-0.5B's config.json values.
cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  bos_token_id=151643, eos_token_id=151645, sliding_window=32768, max_window_layers=21)
if not os.path.exists(os.path.join(out, "base", "config.json")):
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(os.path.join(out, "base"))
else:
    model = Qwen2ForCausalLM.from_pretrained(os.path.join(out, "base"), dtype=torch.bfloat16)
if not os.path.exists(os.path.join(out, "adapter", "adapter_config.json")):
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    peft.save_pretrained(os.path.join(out, "adapter"))
print("inputs ready in", out)
