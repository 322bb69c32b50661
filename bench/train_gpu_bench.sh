#!/usr/bin/env bash
# LoRA SFT throughput on a GPU: pdsd train vs Hugging Face transformers + PEFT on the same
# synthetic data (Qwen2.5-0.5B shape, random weights, LoRA r 8 / alpha 16 on q_proj,v_proj,
# bf16, AdamW, batch 4 x 1024 tokens, every token trained), each with gradient checkpointing on
# and off. Prints tokens/s and peak allocated CUDA memory of all four and the ratios.
#   bench/train_gpu_bench.sh [STEPS] [SEQ]      (run from the repository root, build/pdsd built)
# Peer numbers measured on the reference H200: docs/benchmarks.md.
set -euo pipefail
STEPS=${1:-30}; SEQ=${2:-1024}; BS=4
ROOT=$(cd "$(dirname "$0")/.." && pwd); PDSD=${PDSD:-$ROOT/build/pdsd}
FIX=${PDSD_FIXTURES:-$ROOT/tests/fixtures}
PY=${PYTHON:-python3}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$PDSD" model init --preset qwen2.5-0.5b --tokenizer "$FIX/qwen-tokenizer" --out "$W/model" >/dev/null

# Synthetic alpaca data: responses of random CJK characters (about one token each) so that an
# example is ~SEQ tokens, nearly all of them trained (short prompt).
"$PY" - "$W/data" "$SEQ" "$((STEPS * BS + 8))" <<'PYEOF'
import json, os, random, sys
out, seq, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
rows = [{"instruction": "复述", "input": "", "output": "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(seq - 40))}
        for _ in range(n)]
json.dump(rows, open(os.path.join(out, "synth.json"), "w"), ensure_ascii=False)
json.dump({"synth": {"file_name": "synth.json"}}, open(os.path.join(out, "dataset_info.json"), "w"))
PYEOF

cat >"$W/cfg.yaml" <<YAML
model_name_or_path: $W/model
device: cuda
stage: sft
finetuning_type: lora
lora_target: q_proj,v_proj
dataset: synth
dataset_dir: $W/data
template: qwen
cutoff_len: $SEQ
output_dir: $W/out
per_device_train_batch_size: $BS
gradient_accumulation_steps: 1
learning_rate: 1.0e-4
max_steps: $STEPS
logging_steps: 1
save_steps: 100000
bf16: true
YAML
# steady state: tokens and time between the 5th and the last log line. elapsed_time has whole
# seconds only; throughput = tokens / seconds since the start, so the seconds come from it.
tps_of() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
a, b = rows[4], rows[-1]
ta, tb = a["total_tokens"] / a["throughput"], b["total_tokens"] / b["throughput"]
print(round((b["total_tokens"] - a["total_tokens"]) / (tb - ta)))
PYEOF
}
declare -A PDSD_TPS PDSD_MEM HF_TPS HF_MEM
for gc in on off; do
  disable=$([[ $gc == on ]] && echo false || echo true)
  rm -rf "$W/out"
  "$PDSD" train "$W/cfg.yaml" --disable_gradient_checkpointing $disable 2>"$W/pdsd_$gc.log" >/dev/null || {
    tail -20 "$W/pdsd_$gc.log"; exit 1; }
  PDSD_TPS[$gc]=$(tps_of "$W/out/trainer_log.jsonl" || echo 0)
  PDSD_MEM[$gc]=$(sed -n 's/.*peak CUDA memory allocated: \([0-9.e+-]*\) GiB.*/\1/p' "$W/pdsd_$gc.log")
  est=$(sed -n 's/.*peak CUDA memory allocated: .*(estimate \([0-9.e+-]*\) GiB).*/\1/p' "$W/pdsd_$gc.log")
  echo "pdsd train, checkpointing $gc: ${PDSD_TPS[$gc]} tokens/s, peak ${PDSD_MEM[$gc]} GiB (dry-run estimate $est GiB) (batch $BS x $SEQ, $STEPS steps)"
done

# Peer: transformers + PEFT, same shapes, same token count per step, autocast bf16; checkpointing
# as LLaMA-Factory enables it (non-reentrant, enable_input_require_grads).
for gc in on off; do
  out=$("$PY" - "$W/model" "$SEQ" "$STEPS" "$BS" "$gc" <<'PYEOF' 2>"${PEER_LOG_DIR:-$W}/hf_${SEQ}_$gc.log" || echo "n/a n/a"
import sys, time, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
path, seq, steps, bs, gc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "on"
m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
if gc:
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m.enable_input_require_grads()
m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
m.train()
for p in m.parameters():
    if p.requires_grad: p.data = p.data.float()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
ids = torch.randint(0, 151643, (bs, seq), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(input_ids=ids, labels=ids).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad()
for _ in range(3): step()
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); t = time.time()
for _ in range(steps): step()
torch.cuda.synchronize()
print(round(bs * seq * steps / (time.time() - t)), "%.2f" % (torch.cuda.max_memory_allocated() / 2**30))
PYEOF
)
  HF_TPS[$gc]=${out% *}; HF_MEM[$gc]=${out#* }
  echo "transformers + PEFT, checkpointing $gc: ${HF_TPS[$gc]} tokens/s, peak ${HF_MEM[$gc]} GiB"
done
for gc in on off; do
  [[ ${HF_TPS[$gc]} != n/a ]] && "$PY" -c "print('ratio pdsd / HF+PEFT, checkpointing $gc: %.2f tokens/s, %.2f memory' % (${PDSD_TPS[$gc]} / ${HF_TPS[$gc]}, ${PDSD_MEM[$gc]:-0} / ${HF_MEM[$gc]}))"
done
"$PY" -c "print('pdsd without checkpointing vs HF+PEFT with it: %.2f tokens/s at %.2f memory' % (${PDSD_TPS[off]} / ${HF_TPS[on]}, ${PDSD_MEM[off]:-0} / ${HF_MEM[on]}))" 2>/dev/null || true
