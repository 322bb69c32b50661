#!/bin/bash
# Knowledge-base search latency: pdsd BM25 (SQLite FTS5) and hybrid (BM25 + FAISS flat
# IP, hash-ngram test embedder) on ~100k chunks of Chinese man-page text, 2 threads,
# vs Chatchat's per-query BM25 rebuild (jieba + rank_bm25) in Python when its venv exists.
# Then hybrid at bge-large's width: the same chunks with the 1024-d hash-ngram-1024 test
# embedder (no model run; a real model's query embedding is timed separately, see
# PDSD_BENCH_QUERY_MODEL), exact flat vs IVF (IndexIVFFlat), wall and CPU percentiles,
# and the IVF's recall@10 against flat at several nprobe. Then (issue #7) the fast paths
# against the old ones at several nprobe: BM25 scored from FTS5's postings vs FTS5's
# MATCH + bm25(), the fp16 IVF scan vs FAISS's, hybrid old vs new; and Chatchat's
# EnsembleRetriever (BM25Retriever rebuilt per query + FAISS flat, langchain) on the same
# chunks, vectors and queries when the Chatchat venv has langchain + faiss.
#   bench/kb_search_bench.sh [build/pdsd] [ROWS]
# Env: PDSD_BENCH_DIR (keep corpus + KBs), PDSD_CHATCHAT_VENV, PDSD_BENCH_SKIP_256=1
# (skip the original 256-d section), PDSD_BENCH_SKIP_FLAT1024=1 (skip the slow flat
# 1024-d search rows; the flat KB is still built for recall), PDSD_BENCH_REUSE=1 (keep
# already built 1024-d KBs), PDSD_BENCH_NPROBES (recall loop), PDSD_BENCH_FAST_NPROBES
# (issue #7 rows), PDSD_BENCH_PEER_FULL_N (queries timed on Chatchat's full per-query
# rebuild path, default 2: ~4-5 min each at 100k), PDSD_BENCH_SKIP_PY_BM25=1 (skip the
# older BM25-only Python peer), PDSD_BENCH_QUERY_MODEL (a bge folder:
# time its query embedding, batch of the queries, reported apart from retrieval).
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
echo "machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
if [ -z "${PDSD_BENCH_SKIP_256:-}" ]; then
T0=$(date +%s.%N)
# The original 256-d measurement, exact flat as before (auto would pick IVF at 100k).
taskset -c 0,1 "$PDSD" -t 2 kb -r -n bench -e hash-ngram --vector-index flat --no-progress | tail -1
T1=$(date +%s.%N)
echo "rebuild_s $(echo "$T1 - $T0" | bc)"
HY=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n bench --queries "$W/queries.txt" --mode hybrid)
fi
BM=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n bench --queries "$W/queries.txt" --mode bm25)
echo "pdsd $BM"
[ -n "${HY:-}" ] && echo "pdsd $HY"
bm_p50=$(echo "$BM" | sed -E 's/.*p50_ms ([0-9.]+).*/\1/')

# ---- 1024-d: flat vs IVF -------------------------------------------------------
for kb in b1024flat b1024ivf; do
  if [ ! -d "$R/knowledge_base/$kb/content" ]; then
    mkdir -p "$R/knowledge_base/$kb"
    cp -r "$R/knowledge_base/bench/content" "$R/knowledge_base/$kb/content"
  fi
done
for v in flat ivf; do
  if [ -n "${PDSD_BENCH_REUSE:-}" ] && [ -f "$R/knowledge_base/b1024$v/vector_store/hash-ngram-1024/index.faiss" ]; then continue; fi
  T0=$(date +%s.%N)
  taskset -c 0,1 "$PDSD" -t 2 kb -r -n b1024$v -e hash-ngram-1024 --vector-index $v --no-progress | tail -1
  T1=$(date +%s.%N)
  echo "rebuild_1024_${v}_s $(echo "$T1 - $T0" | bc)"
done
for v in flat ivf; do
  [ "$v" = flat ] && [ -n "${PDSD_BENCH_SKIP_FLAT1024:-}" ] && continue
  for m in dense hybrid; do
    echo "pdsd1024 $(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n b1024$v --queries "$W/queries.txt" --mode $m)"
  done
done
# Recall@10 of IVF vs exact flat (dense lists, top_k 10), per nprobe.
taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n b1024flat --queries "$W/queries.txt" --mode dense --top_k 10 \
  --dump-hits "$W/flat10.txt" >/dev/null
for np in ${PDSD_BENCH_NPROBES:-8 16 32 64 128}; do
  L=$(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n b1024ivf --queries "$W/queries.txt" --mode dense --top_k 10 \
      --nprobe $np --dump-hits "$W/ivf10.txt")
  rec=$(python3 -c "
a=[set(l.rstrip('\n').split('\t'))-{''} for l in open('$W/flat10.txt', encoding='utf-8')]
b=[set(l.rstrip('\n').split('\t'))-{''} for l in open('$W/ivf10.txt', encoding='utf-8')]
r=[len(x&y)/len(x) for x,y in zip(a,b) if x]
print(f'{sum(r)/len(r):.4f}')")
  echo "ivf nprobe $np recall@10_vs_flat $rec dense $(echo "$L" | sed -E 's/.*( p50_ms .*)/\1/')"
done

# ---- issue #7: fast paths vs the old ones on the 1024-d IVF KB ---------------------
# old = FAISS's fp32 IVF scan (--ivf-scan faiss) + FTS5 MATCH/bm25() (--bm25-scorer fts5);
# new (default) = fp16 IVF copy scanned with AVX-512 + BM25 scored from the postings;
# int8 = the int8 IVF copy (--ivf-scan int8).
S() { taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb search -n b1024ivf --queries "$W/queries.txt" "$@"; }
echo "fast load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fast bm25 old(fts5)      $(S --mode bm25 --bm25-scorer fts5)"
echo "fast bm25 new(postings)  $(S --mode bm25)"
NEW_HY_P50=
for np in ${PDSD_BENCH_FAST_NPROBES:-32 64 128 317}; do
  echo "fast nprobe $np dense  old(faiss)  $(S --mode dense --nprobe $np --ivf-scan faiss)"
  echo "fast nprobe $np dense  new(fp16)   $(S --mode dense --nprobe $np --ivf-scan fp16)"
  echo "fast nprobe $np dense  new(int8)   $(S --mode dense --nprobe $np --ivf-scan int8)"
  echo "fast nprobe $np hybrid old         $(S --mode hybrid --nprobe $np --ivf-scan faiss --bm25-scorer fts5)"
  L=$(S --mode hybrid --nprobe $np)
  echo "fast nprobe $np hybrid new(default) $L"
  echo "fast nprobe $np hybrid new(fp16)   $(S --mode hybrid --nprobe $np --ivf-scan fp16)"
  [ "$np" = 317 ] && NEW_HY_P50=$(echo "$L" | sed -E 's/.* p50_ms ([0-9.]+).*/\1/')
  # recall@10 vs flat of each kernel, and agreement with FAISS's own IVF answer
  for k in faiss fp16 int8; do
    S --mode dense --top_k 10 --nprobe $np --ivf-scan $k --dump-hits "$W/k_$k.txt" >/dev/null
  done
  python3 -c "
def rd(p): return [set(l.rstrip('\n').split('\t'))-{''} for l in open(p, encoding='utf-8')]
fl, fa, f16, i8 = rd('$W/flat10.txt'), rd('$W/k_faiss.txt'), rd('$W/k_fp16.txt'), rd('$W/k_int8.txt')
r = lambda x, y: sum(len(p & q) / len(p) for p, q in zip(x, y) if p) / sum(1 for p in x if p)
print(f'fast nprobe $np recall@10_vs_flat faiss {r(fl, fa):.4f} fp16 {r(fl, f16):.4f} int8 {r(fl, i8):.4f}; '
      f'agreement_with_faiss fp16 {r(fa, f16):.4f} int8 {r(fa, i8):.4f}')"
done
echo "fast load after $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${PDSD_BENCH_QUERY_MODEL:-}" ]; then
  python3 -c "
import json
for l in open('$W/queries.txt', encoding='utf-8'):
    if l.strip(): print(json.dumps(l.strip(), ensure_ascii=False))" > "$W/queries.jsonl"
  echo "query embedding (not part of retrieval): $(taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb embed -e "$PDSD_BENCH_QUERY_MODEL" --jsonl "$W/queries.jsonl" --query)"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# ---- Chatchat's EnsembleRetriever on the same chunks / vectors / queries ----------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import langchain, langchain_community, faiss, jieba, rank_bm25" 2>/dev/null; then
  python3 -c "
import json
for l in open('$W/queries.txt', encoding='utf-8'):
    if l.strip(): print(json.dumps(l.strip(), ensure_ascii=False))" > "$W/queries.jsonl"
  taskset -c 0,1 "$PDSD" -t 2 --log-level warn kb embed -e hash-ngram-1024 --jsonl "$W/queries.jsonl" --query --out "$W/qvec.f32" >/dev/null
  PEER=$(taskset -c 0,1 "$VENV/bin/python" "$HERE/kb_chatchat_ensemble.py" "$R/knowledge_base/info.db" b1024flat \
         "$R/knowledge_base/b1024flat/vector_store/hash-ngram-1024/index.faiss" "$W/queries.txt" "$W/qvec.f32" \
         --full-n "${PDSD_BENCH_PEER_FULL_N:-2}")
  echo "$PEER"
  [ -z "$NEW_HY_P50" ] && NEW_HY_P50=$(S --mode hybrid | sed -E 's/.* p50_ms ([0-9.]+).*/\1/')
  pf=$(echo "$PEER" | sed -E 's/.*ensemble_rebuild_per_query_ms_mean ([0-9.]+).*/\1/')
  pc=$(echo "$PEER" | sed -E 's/.*ensemble_cached_bm25_ms_p50 ([0-9.]+).*/\1/')
  echo "ratio chatchat_ensemble_rebuild_per_query / pdsd_hybrid_p50(default nprobe) = $(echo "scale=0; $pf / $NEW_HY_P50" | bc)x"
  echo "ratio chatchat_ensemble_cached_bm25 / pdsd_hybrid_p50(default nprobe) = $(echo "scale=1; $pc / $NEW_HY_P50" | bc)x"
else
  echo "chatchat ensemble peer skipped: no $VENV with langchain, langchain_community, faiss, jieba, rank_bm25"
fi
if [ -z "${PDSD_BENCH_SKIP_PY_BM25:-}" ] && [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import jieba, rank_bm25" 2>/dev/null; then
  PY=$(taskset -c 0,1 "$VENV/bin/python" "$HERE/kb_python_bm25.py" "$R/knowledge_base/bench/content" "$W/queries.txt")
  echo "$PY"
  py_ms=$(echo "$PY" | sed -E 's/.*rebuild_per_query_ms_mean ([0-9.]+).*/\1/')
  py_cached=$(echo "$PY" | sed -E 's/.*cached_index_query_ms_p50 ([0-9.]+).*/\1/')
  echo "ratio chatchat_rebuild_per_query / pdsd_bm25_p50 = $(echo "scale=0; $py_ms / $bm_p50" | bc)x"
  echo "ratio python_cached_bm25 / pdsd_bm25_p50 = $(echo "scale=1; $py_cached / $bm_p50" | bc)x"
elif [ -n "${PDSD_BENCH_SKIP_PY_BM25:-}" ]; then
  echo "python BM25-only peer skipped (PDSD_BENCH_SKIP_PY_BM25)"
else
  echo "python peer skipped: no $VENV with jieba + rank_bm25"
fi
[ -z "${PDSD_BENCH_DIR:-}" ] && rm -rf "$W"
exit 0
