#!/usr/bin/env python3
"""Oracle for the export self-check, both sides, against PEFT's own merge.

  export_selfcheck_peft.py --pdsd build/pdsd

For tiny random Qwen2 bases (bf16 / fp16, tied and untied embeddings) and PEFT LoRA adapters
on all seven linear layers (LLaMA-Factory's `lora_target: all`) with large and small weights:
  pass side:
    1. `pdsd export` exits 0 (its self-check passes) and every tensor equals PEFT's
       merge_and_unload() on the fp32 base, cast to the base dtype, bit for bit;
    2. `pdsd export --check` passes on PEFT's merge made the way LLaMA-Factory's export makes
       it (base loaded in its own bf16/fp16 dtype, merged there, saved by transformers).
  fail side (`pdsd export --check` must exit 1 with "self-check failed") on PEFT's merged
  folder with a planted fault: q_proj's delta merged into o_proj, transposed B A,
  alpha/sqrt(r) instead of alpha/r, layer 1 not merged.
Exit 0 when all hold, 1 otherwise, 77 when torch/transformers/peft are missing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM
except Exception as e:  # noqa: BLE001
    print(f"SKIP: {e}")
    sys.exit(77)

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_base(path, dtype, tied):
    torch.manual_seed(3)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512, rope_theta=1e6,
                      rms_norm_eps=1e-6, tie_word_embeddings=tied)
    model = Qwen2ForCausalLM(cfg).to(dtype)
    model.save_pretrained(path)


def make_adapter(base, path, std):
    model = Qwen2ForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LINEARS, lora_dropout=0.0))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.normal_(0, std)
    peft.save_pretrained(path)


def peft_merge(base, adapter, out, load_dtype, save_dtype):
    model = Qwen2ForCausalLM.from_pretrained(base, dtype=load_dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.to(save_dtype).save_pretrained(out)


def pdsd(args, *extra):
    return subprocess.run([args.pdsd, *extra], capture_output=True, text=True)


def check(args, base, adapter, folder):
    return pdsd(args, "export", "--model_name_or_path", base, "--adapter_name_or_path", adapter, "--check", folder)


def plant(src, dst, edit):
    shutil.copytree(src, dst)
    f = os.path.join(dst, "model.safetensors")
    t = load_file(f)
    edit(t)
    save_file(t, f, metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", required=True)
    args = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as w:
        k = 0
        for dname, dtype in DTYPES.items():
            for tied in (True, False):
                for std in (0.5, 1e-3):
                    k += 1
                    tag = f"{dname} {'tied' if tied else 'untied'} std {std}"
                    base, ad = os.path.join(w, f"base{k}"), os.path.join(w, f"ad{k}")
                    make_base(base, dtype, tied)
                    make_adapter(base, ad, std)
                    out = os.path.join(w, f"pdsd{k}")
                    r = pdsd(args, "export", "--model_name_or_path", base, "--adapter_name_or_path", ad, "--export_dir", out)
                    if r.returncode != 0:
                        failures.append(f"{tag}: pdsd export failed: {r.stderr[-600:]}")
                        continue
                    ref = os.path.join(w, f"peft{k}")
                    peft_merge(base, ad, ref, torch.float32, dtype)
                    ours, theirs = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(ref, "model.safetensors"))
                    diff = [n for n in theirs if n not in ours or not torch.equal(ours[n], theirs[n])]
                    print(f"{tag}: pdsd export ok; tensors differing from PEFT merge_and_unload: {len(diff)}")
                    if diff:
                        failures.append(f"{tag}: {len(diff)} tensors differ from PEFT, e.g. {diff[:3]}")
                    lf_style = os.path.join(w, f"lf{k}")
                    peft_merge(base, ad, lf_style, dtype, dtype)
                    r = check(args, base, ad, lf_style)
                    print(f"{tag}: --check on a PEFT merge in {dname} (LLaMA-Factory's export): exit {r.returncode}")
                    if r.returncode != 0:
                        failures.append(f"{tag}: --check rejected PEFT's {dname} merge: {r.stderr[-600:]}")

        # Planted faults in PEFT's own merged folder (bf16, tied, large weights: case 1).
        base, ad, good = os.path.join(w, "base1"), os.path.join(w, "ad1"), os.path.join(w, "peft1")
        r = check(args, base, ad, good)
        if r.returncode != 0:
            failures.append(f"--check rejected PEFT's fp32 merge: {r.stderr[-600:]}")
        a = load_file(os.path.join(ad, "adapter_model.safetensors"))
        b0 = load_file(os.path.join(base, "model.safetensors"))
        pre = "base_model.model.model.layers.0.self_attn.q_proj"
        A, B = a[pre + ".lora_A.weight"].float(), a[pre + ".lora_B.weight"].float()
        q, o = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
        dt = b0[q].dtype

        def merged(w, d):
            return (w.float() + d).to(dt)

        faults = {
            "q_proj's delta merged into o_proj": lambda t: t.update({q: b0[q].clone(), o: merged(b0[o], B @ A * 2.0)}),
            "transposed B A": lambda t: t.update({q: merged(b0[q], (B @ A * 2.0).T)}),
            "alpha/sqrt(r) instead of alpha/r": lambda t: t.update({q: merged(b0[q], B @ A * (16 / 8 ** 0.5))}),
            "layer 1 not merged": lambda t: t.update({n: b0[n].clone() for n in b0 if n.startswith("model.layers.1.")}),
        }
        for i, (name, edit) in enumerate(faults.items()):
            bad = os.path.join(w, f"bad{i}")
            plant(good, bad, edit)
            r = check(args, base, ad, bad)
            caught = r.returncode == 1 and "self-check failed" in r.stderr
            print(f"planted fault '{name}': exit {r.returncode}, {'caught' if caught else 'NOT caught'}")
            if not caught:
                failures.append(f"planted fault not caught: {name} (exit {r.returncode}) {r.stderr[-400:]}")
    for f in failures:
        print("FAIL:", f)
    print("OK" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
