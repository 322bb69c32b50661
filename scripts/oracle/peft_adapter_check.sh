#!/usr/bin/env bash
# ctest oracle_peft_adapter: `pdsd train` (configs/sft_tiny.yaml, 3 steps, every projection,
# dropout 0.1) saves an adapter; PEFT reloads it on the same base and must give pdsd's logits
# (base + lora::attach_lora) within 1e-4 (peft_adapter_check.py). Exit 77 (skip) without the
# venv or its packages.
# With a fifth argument `qlora` (ctest oracle_qlora_peft) the base is trained and evaluated in
# 4-bit NF4 with double quantization (`--quantization_bit 4`), and PEFT attaches the adapter to
# the base dequantized by bitsandbytes' reference kernels; with `qlora8` (oracle_qlora8_peft) in
# 8-bit int8 rows (`--quantization_bit 8`), dequantized as bitsandbytes' Linear8bitLt trains.
#   peft_adapter_check.sh PDSD SOURCE_DIR FIXTURES_DIR PYTHON [qlora | qlora8]
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3; PY=$4; MODE=${5:-lora}
[[ -x $PY ]] || { echo "SKIP: no python at $PY"; exit 77; }
"$PY" -c "import torch, transformers, peft, safetensors" 2>/dev/null || { echo "SKIP: torch/transformers/peft missing in $PY"; exit 77; }
QUANT=(); CHECK=()
if [[ $MODE == qlora* ]]; then
  "$PY" -c "import bitsandbytes" 2>/dev/null || { echo "SKIP: bitsandbytes missing in $PY"; exit 77; }
fi
if [[ $MODE == qlora ]]; then
  QUANT=(--quantization_bit 4 --quantization_type nf4 --double_quantization true)
  CHECK=(--nf4 nf4 --double-quant)
elif [[ $MODE == qlora8 ]]; then
  QUANT=(--quantization_bit 8)
  CHECK=(--int8)
fi
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC"
# The golden tiny-qwen2 has no tokenizer (vocab 2048); `pdsd model init --preset tiny` writes an
# HF-format tiny Qwen2 with the real tokenizer that both pdsd train and transformers load.
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
"$PDSD" --threads 2 train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --output_dir "$W/out" --max_steps 3 \
  --lora_dropout 0.1 --save_steps 100000 --plot_loss false --eval_strategy no "${QUANT[@]}" 2>"$W/log" || { cat "$W/log"; exit 1; }
"$PDSD" model logits --model "$W/tiny" --adapter "$W/out" --ids 151644,872,198,108386,151645,198,151644,77091,198,9707 \
  --ids 151644,872,198,14990,1879 --ids 40,1079,264,1273,11,220,16,17,18 --out "$W/pdsd_logits.safetensors" "${QUANT[@]}"
"$PY" "$SRC/scripts/oracle/peft_adapter_check.py" "$W/tiny" "$W/out" "$W/pdsd_logits.safetensors" "${CHECK[@]}"
