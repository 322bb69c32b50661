#!/bin/bash
# A `pdsd kb -r` killed with SIGKILL mid-way leaves the previous KB searchable (BM25
# and dense), and the next `kb -r` completes.
set -eu
PDSD=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
R="$T/d"
"$PDSD" init --root "$R" > /dev/null
SRC="$R/knowledge_base/samples/content"
C="$R/knowledge_base/big/content"
mkdir -p "$C"
# ~600 files x ~40 KB of Chinese text.
base=$(cat "$SRC/安装指南.md" "$SRC/常见问题.txt")
block=""
for k in $(seq 1 12); do block="$block$base"$'\n\n'; done
for i in $(seq 1 600); do printf '文档编号 %s\n\n%s' "$i" "$block" > "$C/doc$i.txt"; done
"$PDSD" kb -r --root "$R" -n big -e hash-ngram --no-progress > /dev/null
before=$("$PDSD" kb list --root "$R" | awk '/^big/ {print $5}')
echo "built big KB: $before chunks"

echo "独一无二的标记 zzqtoken" > "$C/zz_new.txt"
"$PDSD" kb -r --root "$R" -n big -e hash-ngram > "$T/out.txt" 2> "$T/err.txt" &
pid=$!
# Wait until it is indexing files, then kill it.
for _ in $(seq 1 200); do
  grep -q "kb big:" "$T/err.txt" 2>/dev/null && break
  sleep 0.05
done
sleep 0.3
kill -0 $pid 2>/dev/null || fail "rebuild finished before it could be killed; make the KB bigger"
kill -9 $pid
wait $pid 2>/dev/null || true
echo "killed rebuild: $(tail -c 200 "$T/err.txt" | tr '\r' '\n' | tail -1)"

after=$("$PDSD" kb list --root "$R" | awk '/^big/ {print $5}')
[ "$after" = "$before" ] || fail "chunk count changed by a killed rebuild: $before -> $after"
"$PDSD" kb search --root "$R" -n big "重置管理员密码" | grep -q "doc" || fail "bm25 after kill"
"$PDSD" kb search --root "$R" -n big "重置管理员密码" --mode dense | grep -q "doc" || fail "dense after kill"
"$PDSD" kb search --root "$R" -n big "zzqtoken" | grep -q "zz_new" && fail "half-written rebuild is visible"

"$PDSD" kb -r --root "$R" -n big -e hash-ngram --no-progress | grep -q "added\|updated" || fail "next rebuild"
"$PDSD" kb search --root "$R" -n big "zzqtoken" | grep -q "zz_new.txt" || fail "next rebuild did not complete"
"$PDSD" kb search --root "$R" -n big "zzqtoken" --mode hybrid | grep -q "zz_new.txt" || fail "hybrid after rebuild"
ls -a "$R/knowledge_base/big/vector_store/hash-ngram/"
echo OK
