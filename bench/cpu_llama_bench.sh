#!/usr/bin/env bash
# pdsd vs llama.cpp (llama-cpp-python) vs HF transformers on CPU, batch 1: prefill and greedy
# decode tokens/s on one Qwen2.5-0.5B-shaped random checkpoint (`pdsd model init`, real Qwen
# tokenizer copied in), converted to GGUF by `pdsd export --export_format gguf` at the same
# precision as pdsd's bf16 run. Runs back to back, prints the load average with each number.
#   bench/cpu_llama_bench.sh [PROMPT_LEN=128] [NEW=32] [THREADS=2]
# Env: PDSD (build/pdsd), PYTHON (.venv python, HF side), LLAMA_PYTHON (python with llama_cpp),
#      MODEL (checkpoint folder, made when missing), GGUF_TYPES (bf16 f16; also q8_0 q4_k_m ...),
#      PDSD_DTYPES (fp32 bf16), PDSD_QUANTS (pdsd --quant runs, e.g. "int8 int4"; none by default),
#      RUNS (timed runs after a warm-up, best reported; 3), SKIP_HF=1 (leave HF out), HF_DTYPES (fp32 bf16).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
py=${PYTHON:-$here/.venv/bin/python}
lpy=${LLAMA_PYTHON:-$here/.venv-llama/bin/python}
plen=${1:-128}; new=${2:-32}; threads=${3:-2}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b-tok}
fixtures=${PDSD_FIXTURES:-$here/tests/fixtures}
gtypes=${GGUF_TYPES:-bf16 f16}
pdtypes=${PDSD_DTYPES:-fp32 bf16}
runs=${RUNS:-3}
if [ ! -f "$model/model.safetensors" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --seed 0 --tokenizer "$fixtures/qwen-tokenizer" >/dev/null
fi
for t in $gtypes; do
  if [ ! -f "$model-gguf-$t/model-$t.gguf" ]; then
    "$pdsd" --log-level warn export --model_name_or_path "$model" --finetuning_type lora --template qwen \
      --export_dir "$model-gguf-$t" --export_format gguf --gguf_type "$t" >/dev/null
  fi
done
load() { cut -d' ' -f1 /proc/loadavg; }
echo "model: $model, prompt $plen, new $new, threads $threads, $(nproc) cores, $(date -u '+%F %H:%M') UTC"
declare -A res
for d in $pdtypes; do
  l=$(load); r=$("$pdsd" -t "$threads" --log-level warn model bench --model "$model" --dtype "$d" --prompt-len "$plen" --new "$new" --runs "$runs")
  res["pdsd-$d"]=$r; echo "pdsd $d (load $l): $r"
done
for q in ${PDSD_QUANTS:-}; do
  l=$(load); r=$("$pdsd" -t "$threads" --log-level warn model bench --model "$model" --quant "$q" --prompt-len "$plen" --new "$new" --runs "$runs")
  res["pdsd-$q"]=$r; echo "pdsd --quant $q (load $l): $r"
done
for t in $gtypes; do
  l=$(load); r=$(OMP_NUM_THREADS=$threads "$lpy" "$here/bench/llama_cpp_bench.py" --model "$model-gguf-$t/model-$t.gguf" \
    --prompt-len "$plen" --new "$new" --threads "$threads" --runs "$runs")
  res["llama-$t"]=$r; echo "llama.cpp $t (load $l): $r"
done
if [ "${SKIP_HF:-0}" != 1 ]; then
  for d in ${HF_DTYPES:-fp32 bf16}; do
    l=$(load); r=$(OMP_NUM_THREADS=$threads "$py" "$here/bench/hf_generate_bench.py" --model "$model" --prompt-len "$plen" --new "$new" \
      --threads "$threads" --runs "$runs" --dtype "$d" 2>/dev/null)
    res["hf-$d"]=$r; echo "hf $d (load $l): $r"
  done
fi
echo "load average after: $(load)"
args=()
for k in "${!res[@]}"; do args+=("$k" "${res[$k]}"); done
python3 - "${args[@]}" <<'PY'
import json, sys
r = {sys.argv[i]: json.loads(sys.argv[i + 1]) for i in range(1, len(sys.argv), 2)}
names = sorted(r)
print(f"{'':12}" + "".join(f"{n:>14}" for n in names))
for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
    print(f"{k[:-12]:12}" + "".join(f"{r[n][k]:14.2f}" for n in names))
llamas = [n for n in names if n.startswith("llama-")]
for p in [n for n in names if n.startswith("pdsd-")]:
    for peer in llamas + ["hf-fp32", "hf-bf16"]:
        if peer in r:
            print(f"{p} / {peer}: prefill {r[p]['prefill_tokens_per_s'] / r[peer]['prefill_tokens_per_s']:.2f}x, "
                  f"decode {r[p]['decode_tokens_per_s'] / r[peer]['decode_tokens_per_s']:.2f}x")
PY
