"""The Hugging Face training loop a LLaMA-Factory user gets for one finetuning method, timed.

    python bench/hf_train_peer.py MODEL --method lora|full|freeze|qlora4|qlora8 --seq 1024
        --steps 12 --batch 4 [--gc on|off] [--device cuda|cpu] [--freeze-layers 2]

Prints one line: `TOKENS_PER_S PEAK_GIB PEAK_KIND TRAINABLE_PARAMS`, or `n/a REASON` when this
machine cannot run the method (exit 0 for bitsandbytes missing, 1 for any other failure, whose
traceback goes to stderr).
PEAK_KIND is `cuda` (torch.cuda.max_memory_allocated over the timed steps) or `rss` (the
process's peak resident set, CPU runs: includes Python and the libraries).

What LLaMA-Factory does, per method (its model loader, init_adapter and prepare_model_for_training):
- the model loads in the compute dtype (bf16 on CUDA; fp32 on CPU, as pdsd computes there);
- trainable parameters are upcast to fp32 (cast_trainable_params_to_fp32, pure_bf16 off) and the
  step runs under autocast in the compute dtype (HF Trainer's bf16: true);
- full: every parameter trains; freeze: every parameter of the last N decoder layers
  (freeze_trainable_layers N, freeze_trainable_modules all); lora / qlora: PEFT LoRA r 8,
  alpha 16 on q_proj,v_proj;
- qlora4: BitsAndBytesConfig(load_in_4bit, nf4, double quantization, compute and storage dtype
  = the compute dtype); qlora8: BitsAndBytesConfig(load_in_8bit) and nothing else. LF then runs
  its own prepare_model_for_training, not PEFT's prepare_model_for_kbit_training: gradient
  checkpointing and input gradients, frozen weights left in their dtype (no fp32 upcast of the
  embeddings and norms, which upcast_layernorm would add; off by default);
- gradient checkpointing (LF's default; --gc off = disable_gradient_checkpointing) non-reentrant
  with enable_input_require_grads, as bench/train_gpu_bench.sh has always measured it.
Same optimizer as the pdsd run's config: AdamW lr 1e-4, weight decay 0.1, grad clip 1.0.
Inputs are random token ids (batch x seq), every token a label.
"""
import argparse
import resource
import sys
import time
import traceback

import torch

METHODS = ("lora", "full", "freeze", "qlora4", "qlora8")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--gc", choices=("on", "off"), default="on")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--freeze-layers", type=int, default=2, help="freeze: train the last N layers")
    return p.parse_args()


def quantization_config(method, dtype):
    """LLaMA-Factory's BitsAndBytesConfig for quantization_bit 4 / 8 (None for float methods)."""
    if not method.startswith("qlora"):
        return None
    from transformers import BitsAndBytesConfig  # raises ImportError without bitsandbytes below
    import bitsandbytes  # noqa: F401  (transformers only checks the package when loading)
    if method == "qlora8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True,
                              bnb_4bit_quant_type="nf4", bnb_4bit_quant_storage=dtype)


def load_model(a, dtype):
    from transformers import AutoModelForCausalLM
    q = quantization_config(a.method, dtype)
    kw = {"quantization_config": q, "device_map": {"": "cuda:0" if a.device == "cuda" else "cpu"}} if q else {}
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa", **kw)
    return m if q else m.to(a.device)


def make_trainable(m, a):
    """Marks what the method trains, upcast to fp32; returns the (maybe PEFT-wrapped) model."""
    if a.gc == "on":
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    if a.method in ("lora", "qlora4", "qlora8"):
        from peft import LoraConfig, get_peft_model
        m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    elif a.method == "freeze":
        n_layers = m.config.num_hidden_layers
        keep = {f"model.layers.{i}." for i in range(max(0, n_layers - a.freeze_layers), n_layers)}
        for name, p in m.named_parameters():
            p.requires_grad_(any(name.startswith(k) for k in keep))
    # full: every parameter already requires grad
    for p in m.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return m


def run(a):
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        return "n/a CUDA not available to torch"
    dtype = torch.bfloat16 if cuda else torch.float32
    try:
        m = load_model(a, dtype)
    except ImportError as e:  # bitsandbytes absent, or transformers' check for it failed
        return f"n/a {a.method} needs bitsandbytes: {e}".replace("\n", " ")
    m = make_trainable(m, a)
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, 151643, (a.batch, a.seq), device=a.device)

    def step():
        with torch.autocast(a.device, dtype=dtype, enabled=cuda):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: kernels chosen, optimizer state allocated
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    for _ in range(a.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    tps = round(a.batch * a.seq * a.steps / (time.time() - t))
    if cuda:
        return f"{tps} {torch.cuda.max_memory_allocated() / 2**30:.3f} cuda {trainable}"
    return f"{tps} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.3f} rss {trainable}"  # ru_maxrss: KiB


def main():
    a = parse_args()
    try:
        print(run(a))
    except Exception as e:  # a peer that cannot run on this machine: say why, let the bench go on
        print(f"n/a {a.method} failed: {type(e).__name__}: {e}".replace("\n", " ")[:300])
        traceback.print_exc()  # to stderr, the caller's log; the caller reads stdout only
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
