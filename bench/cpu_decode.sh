#!/usr/bin/env bash
# pdsd vs HF transformers on CPU, fp32, batch 1: prefill and greedy-decode tokens/s on a
# Qwen2.5-0.5B-shaped random checkpoint made by `pdsd model init` (both load the same folder).
#   bench/cpu_decode.sh [PROMPT_LEN=128] [NEW=32] [THREADS=2]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
py=${PYTHON:-$here/.venv/bin/python}
plen=${1:-128}; new=${2:-32}; threads=${3:-2}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b}
if [ ! -f "$model/model.safetensors" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --seed 0 >/dev/null
fi
echo "model: $model, prompt $plen, new $new, threads $threads, $(nproc) cores, $(date -u +%F)"
p=$("$pdsd" -t "$threads" --log-level warn model bench --model "$model" --prompt-len "$plen" --new "$new")
h=$(OMP_NUM_THREADS=$threads "$py" "$here/bench/hf_generate_bench.py" --model "$model" --prompt-len "$plen" --new "$new" --threads "$threads")
echo "pdsd: $p"
echo "hf:   $h"
"$py" - "$p" "$h" <<'PY'
import json, sys
p, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
    print(f"{k}: pdsd {p[k]:.1f}  hf {h[k]:.1f}  ratio {p[k] / h[k]:.2f}x")
PY
