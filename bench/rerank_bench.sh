#!/bin/sh
# Rerank throughput: pdsd's cross-encoder vs sentence-transformers' CrossEncoder on the same
# random bge-reranker-base-shaped model (XLM-R base: hidden 768, 12 layers, 12 heads,
# intermediate 3072; the tiny fixture tokenizer's 502-piece vocabulary instead of 250002, which
# only changes the embedding table) and the same pairs, fp32, CPU, one run each. Then the
# side-by-side retrieval table of `pdsd kb eval --compare` on a labelled Chinese set built from
# manpages-zh (bench/rerank_make_qa.py), reranked by the tiny golden model (random weights:
# its hit@k says nothing about quality, only that the stage runs; see docs/benchmarks.md).
#
#   bench/rerank_bench.sh [PDSD] [PAIRS]        PDSD default build/pdsd, PAIRS default 128
# Needs .venv (torch, transformers, sentence-transformers). Nothing is written outside a temp dir.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${1:-$here/build/pdsd}
npairs=${2:-128}
py=$here/.venv/bin/python
max_length=512
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

"$py" "$here/tests/kb/make_tiny_reranker.py" --bench-model "$d/base" >/dev/null 2>&1
python3 "$here/bench/rerank_make_qa.py" "$d/data/knowledge_base/qa/content" "$d/qa.jsonl" >/dev/null
# Pairs: each question with the paragraph it came from and with the next one (a negative).
python3 - "$d" "$npairs" <<'PY'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
qa = [json.loads(l) for l in open(f"{d}/qa.jsonl", encoding="utf-8")]
content = f"{d}/data/knowledge_base/qa/content"
files = sorted(os.listdir(content))
text = {f: open(os.path.join(content, f), encoding="utf-8").read() for f in files}
with open(f"{d}/pairs.jsonl", "w", encoding="utf-8") as out:
    i = 0
    while i < n:
        q = qa[(i // 2) % len(qa)]
        f = q["source"] if i % 2 == 0 else files[(files.index(q["source"]) + 1) % len(files)]
        out.write(json.dumps({"query": q["question"], "document": text[f]}, ensure_ascii=False) + "\n")
        i += 1
PY

echo "# rerank throughput: $npairs pairs, max_length $max_length, bge-reranker-base shape (random), fp32, $(nproc) CPUs ($(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //")), $(date -u "+%Y-%m-%d %H:%M") UTC, load $(cut -d" " -f1-3 /proc/loadavg)"
"$pdsd" kb rerank -m "$d/base" --pairs "$d/pairs.jsonl" --max-length 16 --json >/dev/null 2>&1   # page cache warm-up
pd=$("$pdsd" kb rerank -m "$d/base" --pairs "$d/pairs.jsonl" --max-length $max_length --json 2>/dev/null)
st=$("$py" "$here/bench/rerank_st.py" "$d/base" "$d/pairs.jsonl" $max_length 2>/dev/null | tail -1)
"$py" - "$pd" "$st" <<'PY'
import json, math, sys
pd, st = json.loads(sys.argv[1]), json.loads(sys.argv[2])
a = pd["pairs_per_s"]; b = st["pairs_per_s"]
diff = max(abs(1 / (1 + math.exp(-x["logit"])) - y) for x, y in zip(pd["results"][:4], st["first_scores"]))
print(f"pdsd kb rerank        {a:8.2f} pairs/s  ({pd['seconds']:.2f} s)")
print(f"CrossEncoder.predict  {b:8.2f} pairs/s  ({st['seconds']:.2f} s, batch 32, torch threads {st['threads']})")
print(f"ratio pdsd / sentence-transformers = {a / b:.2f}x   (first 4 scores agree within {diff:.1e})")
PY

"$pdsd" kb --root "$d/data" -r -n qa -e hash-ngram >/dev/null 2>&1
head -n 10 "$d/qa.jsonl" | python3 -c 'import json,sys; [print(json.loads(l)["question"]) for l in sys.stdin]' > "$d/q10.txt"
echo "# kb search latency, hybrid, top_k 3, 10 queries (wall ms; the base-shape model reranking the best 20)"
"$pdsd" kb --root "$d/data" search -n qa --mode hybrid --top_k 3 --queries "$d/q10.txt" 2>/dev/null | sed 's/^/no rerank:       /'
"$pdsd" kb --root "$d/data" search -n qa --mode hybrid --top_k 3 --queries "$d/q10.txt" --rerank "$d/base" --rerank-top-n 20 2>/dev/null \
  | sed 's/^/rerank 20 -> 3:  /'

echo "# kb eval --compare: $(wc -l < "$d/qa.jsonl") questions (manpages-zh), hash-ngram embedder, tiny random reranker"
"$pdsd" kb --root "$d/data" eval -n qa --qa "$d/qa.jsonl" --top_k 5 --compare --rerank "$here/tests/fixtures/tiny-xlmr-reranker" 2>/dev/null
