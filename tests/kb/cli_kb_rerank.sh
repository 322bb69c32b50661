#!/bin/sh
# CLI: the rerank flags of kb search / kb eval --compare and kb rerank on the shipped samples,
# with the tiny golden cross-encoder; bad flags and settings exit 1 with a message.
set -eu
PDSD=$1
SRC=$2
RR=$SRC/tests/fixtures/tiny-xlmr-reranker
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$PDSD" init --root "$T/d" >/dev/null
"$PDSD" kb -r --root "$T/d" --no-progress -e hash-ngram >/dev/null 2>&1
"$PDSD" kb search --root "$T/d" -n samples "证书过期" --mode hybrid --rerank "$RR" --rerank-top-n 4 --top_k 2 --json > "$T/s.json" 2>/dev/null
grep -q '"reranker": "tiny-xlmr-reranker"' "$T/s.json" || fail "search --rerank json"
[ "$(grep -c '"rerank": ' "$T/s.json")" = 2 ] || { cat "$T/s.json"; fail "two reranked hits"; }
grep -q '"metric": "cross-encoder' "$T/s.json" || fail "rerank metric"
"$PDSD" kb search --root "$T/d" -n samples "证书过期" --mode hybrid --rerank "$RR" --rerank-top-n 1 --explain 2>/dev/null \
  | grep -q "beyond rerank_top_n 1" || fail "explain shows rerank_top_n"
# kb_settings.yaml turns it on; --rerank none turns it off.
printf 'USE_RERANKER: true\nRERANKER_MODEL: %s\nsearch_mode: hybrid\n' "$RR" >> "$T/d/kb_settings.yaml"
"$PDSD" kb search --root "$T/d" -n samples "证书过期" --json 2>/dev/null | grep -q '"reranker"' || fail "USE_RERANKER"
"$PDSD" kb search --root "$T/d" -n samples "证书过期" --json --rerank none 2>/dev/null | grep -q '"reranker"' && fail "--rerank none"
# eval side by side
QA=$SRC/share/eval/samples_qa.jsonl
"$PDSD" kb eval --root "$T/d" -n samples --qa "$QA" --compare > "$T/e.txt" 2>/dev/null
for row in bm25 dense hybrid hybrid+rerank; do grep -q "^$row " "$T/e.txt" || { cat "$T/e.txt"; fail "eval row $row"; }; done
grep -q "ms/query" "$T/e.txt" || fail "eval latency column"
"$PDSD" kb eval --root "$T/d" -n samples --qa "$QA" --compare --json 2>/dev/null | grep -q '"ms_per_query"' || fail "eval json"
# kb rerank
printf '"E2003 证书过期"\n"天气"\n' > "$T/docs.jsonl"
[ "$("$PDSD" kb rerank -m "$RR" --query "证书" --docs "$T/docs.jsonl" 2>/dev/null | wc -l)" = 2 ] || fail "kb rerank lines"
# errors: exit 1 and a message naming the problem
if "$PDSD" kb search --root "$T/d" -n samples "x" --rerank /no/such/model 2> "$T/err"; then fail "missing model accepted"; fi
grep -q "/no/such/model" "$T/err" || fail "missing model message"
if "$PDSD" kb search --root "$T/d" -n samples "x" --fusion sum 2> "$T/err"; then fail "bad fusion accepted"; fi
grep -q "fusion" "$T/err" || fail "fusion message"
printf 'hybrid_weights: [1, 2, 3]\n' >> "$T/d/kb_settings.yaml"
set +e
"$PDSD" kb search --root "$T/d" -n samples "x" 2> "$T/err"; rc=$?
set -e
[ $rc = 1 ] && grep -q "hybrid_weights" "$T/err" || { cat "$T/err"; fail "bad hybrid_weights: rc $rc"; }
echo ok
