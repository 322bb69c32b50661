#!/bin/sh
# CLI: pdsd init + kb -r + kb search/list/split on the shipped samples (cwd-independent).
set -eu
PDSD=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$PDSD" init --root "$T/d" | grep -q "samples knowledge base" || fail "init did not copy samples"
"$PDSD" init --root "$T/d" | grep -q "kept existing" || fail "init overwrote configs"
"$PDSD" kb -r --root "$T/d" --no-progress > "$T/r.txt"
grep -q "added 6, updated 0, removed 0" "$T/r.txt" || { cat "$T/r.txt"; fail "kb -r summary"; }
"$PDSD" kb list --root "$T/d" | grep -q "samples *files 6" || fail "kb list"
"$PDSD" kb search --root "$T/d" -n samples "忘记管理员密码" | grep -q "常见问题.txt" || fail "bm25 search"
"$PDSD" kb search --root "$T/d" -n samples "备份 /var/lib/xhg 目录" | grep -q "运维手册.docx" || fail "docx sample searchable"
"$PDSD" kb search --root "$T/d" -n samples "E2003 上游证书已过期" --json --top_k 1 > "$T/s.json"
grep -q '"file_name": "错误码.csv"' "$T/s.json" || fail "json search"
grep -q '"metric": "bm25' "$T/s.json" || fail "json metric"
"$PDSD" kb search --root "$T/d" -n samples "证书" --explain --top_k 1 | grep -q "^drop .*beyond top_k" || fail "explain"
# retrieval evaluation on the shipped questions
QA=$(dirname "$0")/../../share/eval/samples_qa.jsonl
"$PDSD" kb eval --root "$T/d" -n samples --qa "$QA" > "$T/eval.txt"
grep -q "10 questions, top_k 5" "$T/eval.txt" && grep -q "^hit@1 " "$T/eval.txt" && grep -q "^MRR@5 " "$T/eval.txt" || { cat "$T/eval.txt"; fail "kb eval"; }
"$PDSD" kb eval --root "$T/d" -n samples --qa "$QA" --json | grep -q '"mrr"' || fail "kb eval --json"
printf '{"question": "x"}\n' > "$T/bad.jsonl"
if "$PDSD" kb eval --root "$T/d" -n samples --qa "$T/bad.jsonl" 2> "$T/bad.txt"; then fail "bad qa accepted"; fi
grep -q "line 1" "$T/bad.txt" || fail "bad qa message"
# PDSD_ROOT and the default ./data
(cd "$T" && PDSD_ROOT="$T/d" "$PDSD" kb list | grep -q samples) || fail "PDSD_ROOT"
(cd "$T" && mv d data && "$PDSD" kb list | grep -q samples && mv data d) || fail "./data default"
# increment: nothing changed
"$PDSD" kb -i --root "$T/d" --no-progress | grep -q "added 0, updated 0, removed 0, unchanged 6" || fail "increment no-op"
# dense needs an embedder; bge is not built in: a clear error, exit 1
if "$PDSD" kb -r --root "$T/d" -e bge-large-zh-v1.5 2> "$T/e.txt"; then fail "-e bge should fail"; fi
grep -q "no embedding model implementation" "$T/e.txt" || fail "embedder error message"
# the test embedder gives dense + hybrid end to end
"$PDSD" kb -r --root "$T/d" -e hash-ngram --no-progress > /dev/null
test -f "$T/d/knowledge_base/samples/vector_store/hash-ngram/index.faiss" || fail "index.faiss"
"$PDSD" kb search --root "$T/d" -n samples "忘记管理员密码" --mode hybrid | grep -q "常见问题.txt" || fail "hybrid"
# split debug command
"$PDSD" kb split "$T/d/knowledge_base/samples/content/安装指南.md" --chunk_size 200 --json | grep -q '"chunks"' || fail "split"
echo OK
