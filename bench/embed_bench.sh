#!/bin/bash
# Embedding throughput on CPU: pdsd (libtorch BertModel, bge pooling) vs
# sentence-transformers on the same bge-large-zh-v1.5-shaped random-weight model, the
# same Chinese chunks (manpages-zh, ~300 characters) and the same 2 threads (both pinned
# to cores 0,1), in fp32 and in bf16 (ST: model.to(torch.bfloat16)). For each dtype the
# two tools run alternately REPEATS times (ST, pdsd, ST, pdsd, ...), so each pair shares
# the box's load; prints chunks/s of every run, the ratio of each pair, the ratio of the
# medians and of the best runs, the largest 1-cosine between pdsd's vectors and ST's
# fp32 ones (same weights and tokenizer semantics: fp32 must agree to ~1e-7), and for
# bf16 the smallest per-chunk cosine to pdsd's own fp32 vectors (must be >= 0.999; what
# lets `embed_dtype: auto` pick bf16 on AVX512-BF16/AMX CPUs).
#   bench/embed_bench.sh [build/pdsd] [CHUNKS] [REPEATS]
# Env: PDSD_EMBED_BENCH_DIR (keeps model + chunks between runs), PDSD_ST_PYTHON
# (a python with sentence-transformers; default /work/venvs/embed/bin/python),
# PDSD_EMBED_DTYPES (dtypes to run both tools in, default "fp32 bf16"; fp32 first, as
# its vectors are the references), PDSD_EMBED_PROFILE=1 with PDSD_LOG_LEVEL=info (pdsd
# logs seconds per forward step), PDSD_EMBED_UNFUSED=1 / PDSD_EMBED_PADDED=1 /
# PDSD_EMBED_BATCH_TOKENS=N (pdsd A/B switches).
set -euo pipefail
PDSD=${1:-build/pdsd}
N=${2:-64}
R=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PDSD_ST_PYTHON:-/work/venvs/embed/bin/python}
W=${PDSD_EMBED_BENCH_DIR:-$(mktemp -d)}
M="$W/bge-large-zh-random"
mkdir -p "$W"
"$PY" "$HERE/embed_make_inputs.py" "$M" "$W/chunks.jsonl" --chunks "$N"
echo "machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M UTC')"
rate() { sed -E 's/.*chunks_per_s ([0-9.]+).*/\1/'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A ST_MED
for dt in ${PDSD_EMBED_DTYPES:-fp32 bf16}; do
  st_rates=() p_rates=()
  for ((r = 1; r <= R; r++)); do
    ST=$(taskset -c 0,1 "$PY" "$HERE/embed_st.py" "$M" "$W/chunks.jsonl" "$W/st_$dt.f32" --threads 2 --dtype "$dt" 2>/dev/null)
    P=$(taskset -c 0,1 "$PDSD" -t 2 --log-level "${PDSD_LOG_LEVEL:-warn}" kb embed -e "$M" --jsonl "$W/chunks.jsonl" --out "$W/pdsd_$dt.f32" --dtype "$dt")
    s=$(rate <<< "$ST") p=$(rate <<< "$P")
    st_rates+=("$s") p_rates+=("$p")
    echo "[$dt run $r, load $(cut -d' ' -f1 /proc/loadavg)] $ST"
    echo "[$dt run $r] $P"
    echo "[$dt run $r] pair ratio pdsd/ST = $(echo "scale=2; $p / $s" | bc)x"
  done
  sm=$(printf '%s\n' "${st_rates[@]}" | median) pm=$(printf '%s\n' "${p_rates[@]}" | median)
  sb=$(printf '%s\n' "${st_rates[@]}" | sort -g | tail -1) pb=$(printf '%s\n' "${p_rates[@]}" | sort -g | tail -1)
  ST_MED[$dt]=$sm
  gap=$("$PY" -c "
import numpy as np, os
ld = lambda f: np.fromfile(f, dtype=np.float32).reshape($N, -1)
b = ld('$W/pdsd_$dt.f32'); a = ld('$W/st_fp32.f32')
m = f'max 1-cosine vs ST fp32 vectors: {float(np.max(1 - (a * b).sum(1))):.2e}'
if '$dt' != 'fp32' and os.path.exists('$W/pdsd_fp32.f32'):
    c = float(np.min((ld('$W/pdsd_fp32.f32') * b).sum(1)))
    m += f'; min cosine per chunk vs pdsd fp32: {c:.6f} ' + ('(>= 0.999: ok)' if c >= 0.999 else '(< 0.999: FAIL)')
print(m)")
  echo "$dt: median chunks/s ST $sm pdsd $pm -> ratio pdsd_$dt / sentence_transformers_$dt = $(echo "scale=2; $pm / $sm" | bc)x (best runs: $sb vs $pb = $(echo "scale=2; $pb / $sb" | bc)x)"
  echo "$dt: $gap"
  [ "$dt" != fp32 ] && [ -n "${ST_MED[fp32]:-}" ] && \
    echo "ratio pdsd_$dt / sentence_transformers_fp32 (medians) = $(echo "scale=2; $pm / ${ST_MED[fp32]}" | bc)x"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${PDSD_EMBED_BENCH_DIR:-}" ] && rm -rf "$W"
exit 0
