#!/usr/bin/env bash
# pdsd weight-only quantized CPU decode (--quant int8 / int4, model/quant.h) against pdsd's own
# unquantized run, on one Qwen2.5-0.5B-shaped random checkpoint, batch 1, back to back; prints
# the load average with each number and the decode ratios. (llama.cpp Q8_0/Q4_K_M: not yet here;
# bench/cpu_llama_bench.sh times llama.cpp's GGUF types where its venv exists.)
#   bench/cpu_quant_bench.sh [PROMPT_LEN=128] [NEW=32] [THREADS=2]
# Env: PDSD (build/pdsd), MODEL (made when missing), QUANTS (none int8 int4), DTYPE (loader default), RUNS (2).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
plen=${1:-128}; new=${2:-32}; threads=${3:-2}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b-tok}
runs=${RUNS:-2}
if [ ! -f "$model/model.safetensors" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --seed 0 --tokenizer "$here/tests/fixtures/qwen-tokenizer" >/dev/null
fi
echo "model: $model, prompt $plen, new $new, threads $threads, $(nproc) cores, $(date -u '+%F %H:%M') UTC"
declare -A dec
for q in ${QUANTS:-none int8 int4}; do
  l=$(cut -d' ' -f1 /proc/loadavg)
  r=$("$pdsd" -t "$threads" --log-level warn model bench --model "$model" ${DTYPE:+--dtype "$DTYPE"} --quant "$q" \
      --prompt-len "$plen" --new "$new" --runs "$runs")
  echo "pdsd quant=$q (load $l): $r"
  dec[$q]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["decode_tokens_per_s"])' "$r")
done
echo "load average after: $(cut -d' ' -f1 /proc/loadavg)"
if [ -n "${dec[none]:-}" ]; then
  for q in "${!dec[@]}"; do
    [ "$q" = none ] || python3 -c 'import sys; print(f"decode {sys.argv[1]} / none: {float(sys.argv[2]) / float(sys.argv[3]):.2f}x")' "$q" "${dec[$q]}" "${dec[none]}"
  done
fi
