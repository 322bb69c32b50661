#!/usr/bin/env bash
# pdsd kb with a bge-style model folder: tiny-bert's weights (hidden 64, 128 positions)
# plus the first 1000 tokens of the WordPiece test vocabulary. Checks the vector store
# folder name, the token cap report (128 < 750-character chunks) and a dense search.
set -euo pipefail
pdsd=$1 fx=$2 src=$3
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
m=$t/models/bge-tiny-zh
mkdir -p "$m"
cp "$fx/golden/tiny-bert/config.json" "$fx/golden/tiny-bert/model.safetensors" "$m/"
head -n 1000 "$src/tests/tokenizer/fixtures/wordpiece/vocab.txt" > "$m/vocab.txt"
cp "$src/tests/tokenizer/fixtures/wordpiece/tokenizer_config.json" "$m/"
"$pdsd" init --root "$t/data" > /dev/null
out=$("$pdsd" kb -r --root "$t/data" -e "$m" --no-progress 2> "$t/err")
echo "$out"
grep -q "longer than 128 embedding tokens" <<< "$out" || { echo "FAIL: no cap summary"; cat "$t/err"; exit 1; }
grep -q "embedding tokens > cap 128" "$t/err" || { echo "FAIL: no per-chunk cap warning"; cat "$t/err"; exit 1; }
test -f "$t/data/knowledge_base/samples/vector_store/bge-tiny-zh/index.faiss" || { echo "FAIL: vector store folder"; exit 1; }
s=$("$pdsd" kb search --root "$t/data" -n samples --mode dense "如何安装" 2>&1)
echo "$s"
grep -q "cosine similarity" <<< "$s" && grep -q "^\[1\] score" <<< "$s" || { echo "FAIL: dense search"; exit 1; }
# by name under <root>/models, and incremental update keeps the store
mkdir -p "$t/data/models"
cp -r "$m" "$t/data/models/"
"$pdsd" kb -r --root "$t/data" -e bge-tiny-zh --no-progress > /dev/null 2>&1
h=$("$pdsd" kb search --root "$t/data" -n samples --mode hybrid "安装" 2>&1)
grep -q "^\[1\] score" <<< "$h" || { echo "FAIL: hybrid search by model name"; echo "$h"; exit 1; }
echo OK
