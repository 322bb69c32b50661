#!/usr/bin/env bash
# LoRA SFT throughput on a GPU: pdsd train vs Hugging Face transformers + PEFT on the same
# synthetic data (Qwen2.5-0.5B shape, random weights, LoRA r 8 / alpha 16 on q_proj,v_proj,
# bf16, AdamW, batch 4 x 1024 tokens, every token trained). Prints tokens/s of both and the ratio.
#   bench/train_gpu_bench.sh [STEPS] [SEQ]      (run from the repository root, build/pdsd built)
# Peer numbers measured on the reference H200 are in ../shared/reference/gpu-machine.md.
set -euo pipefail
STEPS=${1:-30}; SEQ=${2:-1024}; BS=4
ROOT=$(cd "$(dirname "$0")/.." && pwd); PDSD=${PDSD:-$ROOT/build/pdsd}
FIX=${PDSD_FIXTURES:-$ROOT/../shared/fixtures}
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
"$PDSD" train "$W/cfg.yaml" 2>"$W/pdsd.log" >/dev/null || { tail -20 "$W/pdsd.log"; exit 1; }
# steady state: tokens and time between the 5th and the last log line
PDSD_TPS=$("$PY" - "$W/out/trainer_log.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
def secs(s):
    h, m, x = s.split(":")[-3:]; return int(h) * 3600 + int(m) * 60 + int(x)
a, b = rows[4], rows[-1]
dt = max(1, secs(b["elapsed_time"]) - secs(a["elapsed_time"]))
print(round((b["total_tokens"] - a["total_tokens"]) / dt))
PYEOF
)
echo "pdsd train: $PDSD_TPS tokens/s (batch $BS x $SEQ, $STEPS steps)"

# Peer: transformers + PEFT, same shapes, same token count per step, autocast bf16.
HF_TPS=$("$PY" - "$W/model" "$SEQ" "$STEPS" "$BS" <<'PYEOF' 2>/dev/null || echo "n/a"
import sys, time, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
path, seq, steps, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
for p in m.parameters():
    if p.requires_grad: p.data = p.data.float()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
ids = torch.randint(0, 151643, (bs, seq), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(input_ids=ids, labels=ids).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad()
for _ in range(3): step()
torch.cuda.synchronize(); t = time.time()
for _ in range(steps): step()
torch.cuda.synchronize(); print(round(bs * seq * steps / (time.time() - t)))
PYEOF
)
echo "transformers + PEFT: $HF_TPS tokens/s"
[[ $HF_TPS != n/a ]] && "$PY" -c "print('ratio pdsd / HF+PEFT: %.2f' % ($PDSD_TPS / $HF_TPS))"
