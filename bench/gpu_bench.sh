#!/usr/bin/env bash
# pdsd vs HF transformers on one CUDA GPU (H100/H200), bf16, Qwen2.5-0.5B shape with random
# weights: greedy decode tokens/s at batch 1 and 8 (prompt 128, 256 new tokens) and prefill of
# a 4096-token prompt. pdsd runs with and without CUDA graphs; the peer is transformers'
# model forward with its KV cache in a Python loop (bench/hf_generate_bench.py), same prompts'
# shape, same device. Prints one JSON line per run, then a ratio table.
#   bench/gpu_bench.sh [DEVICE=cuda]        (PDSD=..., PYTHON=..., MODEL=dir to reuse)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
py=${PYTHON:-$here/.venv/bin/python}
dev=${1:-cuda}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b}
hf_runs=${HF_RUNS:-1}
if [ ! -f "$model/config.json" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --seed 0 >/dev/null
fi
"$pdsd" --log-level warn env | grep -E "CUDA|libtorch" || true
log=$(mktemp)
run() {  # name, pdsd args...
  local name=$1; shift
  printf '%s\t' "$name" >>"$log"
  "$pdsd" --log-level warn model bench --model "$model" --device "$dev" --dtype bf16 "$@" | tee -a "$log"
}
hf() {  # name, hf args...
  local name=$1; shift
  printf '%s\t' "$name" >>"$log"
  "$py" "$here/bench/hf_generate_bench.py" --model "$model" --device "$dev" --dtype bf16 --runs "$hf_runs" "$@" | tee -a "$log"
}
for b in 1 8; do
  run "pdsd graph b$b" --prompt-len 128 --new 256 --batch $b --cuda-graph true
  run "pdsd eager b$b" --prompt-len 128 --new 256 --batch $b --cuda-graph false
  hf "hf b$b" --prompt-len 128 --new 256 --batch $b
done
run "pdsd prefill" --prompt-len 4096 --new 2 --batch 1 --runs 5
hf "hf prefill" --prompt-len 4096 --new 2 --runs 5
"$py" - "$log" <<'PYEOF'
import json, sys
r = {}
for line in open(sys.argv[1]):
    name, js = line.split("\t", 1)
    r[name] = json.loads(js)
print("\n| run | pdsd graph | pdsd eager | HF | graph / HF |")
print("|---|---|---|---|---|")
for b in (1, 8):
    g, e, h = (r[f"{k} b{b}"]["decode_tokens_per_s"] for k in ("pdsd graph", "pdsd eager", "hf"))
    print(f"| decode tokens/s, batch {b} | {g:,.0f} | {e:,.0f} | {h:,.0f} | {g / h:.1f}x |")
p, h = r["pdsd prefill"]["prefill_tokens_per_s"], r["hf prefill"]["prefill_tokens_per_s"]
print(f"| prefill tokens/s, 4096 | {p:,.0f} | | {h:,.0f} | {p / h:.2f}x |")
PYEOF
rm -f "$log"
