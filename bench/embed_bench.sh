#!/bin/bash
# Embedding throughput on CPU: pdsd (libtorch BertModel, bge pooling) vs
# sentence-transformers on the same bge-large-zh-v1.5-shaped random-weight model, the
# same Chinese chunks (manpages-zh, ~300 characters) and the same 2 threads (both pinned
# to cores 0,1). Prints chunks/s of each, the ratio, and the largest cosine gap between
# the two tools' vectors (they must agree: same weights, same tokenizer semantics).
#   bench/embed_bench.sh [build/pdsd] [CHUNKS]
# Env: PDSD_EMBED_BENCH_DIR (keeps model + chunks between runs), PDSD_ST_PYTHON
# (a python with sentence-transformers; default /work/venvs/embed/bin/python),
# PDSD_EMBED_DTYPES (pdsd dtypes to run, default "fp32 bf16"; ST always runs fp32).
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
ST=$(taskset -c 0,1 "$PY" "$HERE/embed_st.py" "$M" "$W/chunks.jsonl" "$W/st.f32" --threads 2 2>/dev/null)
echo "$ST"
st_rate=$(sed -E 's/.*chunks_per_s ([0-9.]+).*/\1/' <<< "$ST")
for dt in ${PDSD_EMBED_DTYPES:-fp32 bf16}; do
  P=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb embed -e "$M" --jsonl "$W/chunks.jsonl" --out "$W/pdsd_$dt.f32" --dtype "$dt")
  echo "$P"
  p_rate=$(sed -E 's/.*chunks_per_s ([0-9.]+).*/\1/' <<< "$P")
  gap=$("$PY" -c "
import numpy as np, sys
a = np.fromfile('$W/st.f32', dtype=np.float32).reshape($N, -1); b = np.fromfile('$W/pdsd_$dt.f32', dtype=np.float32).reshape($N, -1)
print(f'{float(np.max(1 - (a * b).sum(1))):.2e}')")
  echo "ratio pdsd_$dt / sentence_transformers_fp32 = $(echo "scale=2; $p_rate / $st_rate" | bc)x  (max 1-cosine vs ST: $gap)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${PDSD_EMBED_BENCH_DIR:-}" ] && rm -rf "$W"
exit 0
