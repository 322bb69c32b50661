#!/usr/bin/env bash
# The main job on a fresh machine, on the bundled samples:
#   set up + build -> pdsd init -> pdsd kb -r -> one pdsd chat -q answer with its sources.
# Retrieval-only (Chatchat's return_direct) unless a Qwen2.5 folder is at
# models/Qwen2.5-0.5B-Instruct (or model_settings.yaml points elsewhere): then full RAG.
# Also validates the bundled SFT datasets. QUESTION="..." asks something else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
QUESTION=${QUESTION:-"如何安装？"}
build/pdsd env
TOKENIZER=models/Qwen2.5-0.5B-Instruct
[[ -f $TOKENIZER/tokenizer.json ]] || TOKENIZER=tests/fixtures/qwen-tokenizer
build/pdsd data validate --dataset_dir data --dataset helpdesk_alpaca_zh,helpdesk_sharegpt_zh \
  --template qwen --cutoff_len 1024 --tokenizer "$TOKENIZER"
build/pdsd init
build/pdsd kb -r
echo "Q: $QUESTION"
build/pdsd chat --kb samples -q "$QUESTION"
