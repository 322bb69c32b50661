#!/usr/bin/env bash
# ctest oracle_train_full_hf: `pdsd train --finetuning_type full` (tiny random Qwen2, 3 steps)
# writes an HF model folder; transformers loads it and gives the logits pdsd computes from it
# (full_hf_oracle.py). Exit 77 (skip) without the venv or its packages.
#   full_hf_oracle.sh PDSD SOURCE_DIR FIXTURES_DIR PYTHON
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3; PY=$4
[[ -x $PY ]] || { echo "SKIP: no python at $PY (the .venv of scripts/setup.sh)"; exit 77; }
"$PY" -c "import torch, transformers, safetensors" 2>/dev/null || { echo "SKIP: torch/transformers missing in $PY"; exit 77; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC"
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
"$PDSD" --threads 2 train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --output_dir "$W/out" --finetuning_type full \
  --max_steps 3 --max_samples 8 --val_size 0 --cutoff_len 64 --per_device_train_batch_size 2 --gradient_accumulation_steps 1 \
  --learning_rate 1e-3 --save_steps 100000 --plot_loss false --eval_strategy no 2>"$W/log" || { cat "$W/log"; exit 1; }
"$PDSD" model logits --model "$W/out" --ids 151644,872,198,108386,151645,198,151644,77091,198,9707 \
  --ids 151644,872,198,14990,1879 --ids 40,1079,264,1273,11,220,16,17,18 --out "$W/pdsd_logits.safetensors"
"$PY" "$SRC/tests/train/full_hf_oracle.py" "$W/tiny" "$W/out" "$W/pdsd_logits.safetensors"
