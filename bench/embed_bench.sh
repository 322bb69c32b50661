#!/bin/bash
# Embedding throughput on CPU: pdsd (libtorch BertModel, bge pooling) vs
# sentence-transformers on the same bge-large-zh-v1.5-shaped random-weight model, the
# same Chinese chunks (manpages-zh, ~300 characters) and the same 2 threads (both pinned
# to cores 0,1), in fp32 and in bf16. Prints chunks/s of each, the ratios, and the
# largest 1-cosine between pdsd's vectors and ST's fp32 ones (same weights, same
# tokenizer semantics: fp32 must agree to ~1e-7).
#   bench/embed_bench.sh [build/pdsd] [CHUNKS]
# Env: PDSD_EMBED_BENCH_DIR (keeps model + chunks between runs), PDSD_ST_PYTHON
# (a python with sentence-transformers; default /work/venvs/embed/bin/python),
# PDSD_EMBED_DTYPES (dtypes to run both tools in, default "fp32 bf16"; fp32 first, as
# its ST vectors are the reference for the cosine gap).
set -euo pipefail
PDSD=${1:-build/pdsd}
N=${2:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PDSD_ST_PYTHON:-/work/venvs/embed/bin/python}
W=${PDSD_EMBED_BENCH_DIR:-$(mktemp -d)}
M="$W/bge-large-zh-random"
mkdir -p "$W"
"$PY" "$HERE/embed_make_inputs.py" "$M" "$W/chunks.jsonl" --chunks "$N"
echo "machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A ST_RATE
for dt in ${PDSD_EMBED_DTYPES:-fp32 bf16}; do
  ST=$(taskset -c 0,1 "$PY" "$HERE/embed_st.py" "$M" "$W/chunks.jsonl" "$W/st_$dt.f32" --threads 2 --dtype "$dt" 2>/dev/null)
  echo "$ST"
  ST_RATE[$dt]=$(sed -E 's/.*chunks_per_s ([0-9.]+).*/\1/' <<< "$ST")
  P=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb embed -e "$M" --jsonl "$W/chunks.jsonl" --out "$W/pdsd_$dt.f32" --dtype "$dt")
  echo "$P"
  p_rate=$(sed -E 's/.*chunks_per_s ([0-9.]+).*/\1/' <<< "$P")
  gap=$("$PY" -c "
import numpy as np
a = np.fromfile('$W/st_fp32.f32', dtype=np.float32).reshape($N, -1); b = np.fromfile('$W/pdsd_$dt.f32', dtype=np.float32).reshape($N, -1)
print(f'{float(np.max(1 - (a * b).sum(1))):.2e}')")
  echo "ratio pdsd_$dt / sentence_transformers_$dt = $(echo "scale=2; $p_rate / ${ST_RATE[$dt]}" | bc)x  (max 1-cosine vs ST fp32 vectors: $gap)"
  [ "$dt" != fp32 ] && [ -n "${ST_RATE[fp32]:-}" ] && \
    echo "ratio pdsd_$dt / sentence_transformers_fp32 = $(echo "scale=2; $p_rate / ${ST_RATE[fp32]}" | bc)x"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${PDSD_EMBED_BENCH_DIR:-}" ] && rm -rf "$W"
exit 0
