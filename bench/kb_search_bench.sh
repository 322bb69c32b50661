#!/bin/bash
# Knowledge-base search latency: pdsd BM25 (SQLite FTS5) and hybrid (BM25 + FAISS flat
# IP, hash-ngram test embedder) on ~100k chunks of Chinese man-page text, 2 threads,
# vs Chatchat's per-query BM25 rebuild (jieba + rank_bm25) in Python when its venv exists.
#   bench/kb_search_bench.sh [build/pdsd] [ROWS]
set -euo pipefail
PDSD=${1:-build/pdsd}
ROWS=${2:-100000}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${PDSD_CHATCHAT_VENV:-/work/venvs/chatchat}
W=${PDSD_BENCH_DIR:-$(mktemp -d)}
R="$W/root"
mkdir -p "$R"
export PDSD_ROOT="$R"
if [ ! -d "$R/knowledge_base/bench/content" ]; then
  python3 "$HERE/kb_gen_corpus.py" "$R/knowledge_base/bench/content" "$W/queries.txt" --rows "$ROWS"
fi
T0=$(date +%s.%N)
taskset -c 0,1 "$PDSD" -t 2 kb -r -n bench -e hash-ngram --no-progress | tail -1
T1=$(date +%s.%N)
echo "rebuild_s $(echo "$T1 - $T0" | bc)"
BM=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n bench --queries "$W/queries.txt" --mode bm25)
HY=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n bench --queries "$W/queries.txt" --mode hybrid)
echo "pdsd $BM"
echo "pdsd $HY"
bm_p50=$(echo "$BM" | sed -E 's/.*p50_ms ([0-9.]+).*/\1/')
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import jieba, rank_bm25" 2>/dev/null; then
  PY=$(taskset -c 0,1 "$VENV/bin/python" "$HERE/kb_python_bm25.py" "$R/knowledge_base/bench/content" "$W/queries.txt")
  echo "$PY"
  py_ms=$(echo "$PY" | sed -E 's/.*rebuild_per_query_ms_mean ([0-9.]+).*/\1/')
  py_cached=$(echo "$PY" | sed -E 's/.*cached_index_query_ms_p50 ([0-9.]+).*/\1/')
  echo "ratio chatchat_rebuild_per_query / pdsd_bm25_p50 = $(echo "scale=0; $py_ms / $bm_p50" | bc)x"
  echo "ratio python_cached_bm25 / pdsd_bm25_p50 = $(echo "scale=1; $py_cached / $bm_p50" | bc)x"
else
  echo "python peer skipped: no $VENV with jieba + rank_bm25"
fi
[ -z "${PDSD_BENCH_DIR:-}" ] && rm -rf "$W"
exit 0
