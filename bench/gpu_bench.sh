#!/usr/bin/env bash
# pdsd vs HF transformers on one CUDA GPU (H100/H200), bf16: decode tokens/s at batch 1 and 8,
# and prefill of a 4096-token prompt, on a Qwen2.5-0.5B-shaped random checkpoint.
# Not measured yet (no GPU on the development machine). Needs build/pdsd built with CUDA torch.
#   bench/gpu_bench.sh [DEVICE=cuda]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
py=${PYTHON:-$here/.venv/bin/python}
dev=${1:-cuda}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b}
if [ ! -f "$model/model.safetensors" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --seed 0 >/dev/null
fi
"$pdsd" --log-level warn env | grep -E "CUDA|libtorch"
run() {  # name, pdsd args...
  echo "== $1"; shift
  "$pdsd" --log-level warn model bench --model "$model" --device "$dev" --dtype bf16 "$@"
}
run "decode batch 1 (prompt 128, 256 new)" --prompt-len 128 --new 256 --batch 1
run "decode batch 8 (prompt 128, 256 new)" --prompt-len 128 --new 256 --batch 8
run "prefill 4096" --prompt-len 4096 --new 2 --batch 1
echo "== HF transformers, decode batch 1 / prefill 4096"
"$py" "$here/bench/hf_generate_bench.py" --model "$model" --device "$dev" --dtype bf16 --prompt-len 128 --new 256
"$py" "$here/bench/hf_generate_bench.py" --model "$model" --device "$dev" --dtype bf16 --prompt-len 4096 --new 2
