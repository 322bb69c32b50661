#!/usr/bin/env bash
# pdsd kb with a bge-m3-shaped folder (tests/model/fixtures/tiny-xlmr: XLM-R, sentencepiece,
# 66 positions -> cap 64 tokens): detection by config.json model_type, the token cap report,
# the vector store folder name and a dense search.
set -euo pipefail
pdsd=$1 src=$2
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
m=$t/models/bge-m3-tiny
mkdir -p "$m"
cp "$src"/tests/model/fixtures/tiny-xlmr/{config.json,model.safetensors,sentencepiece.bpe.model,tokenizer_config.json} "$m/"
"$pdsd" init --root "$t/data" > /dev/null
out=$("$pdsd" kb -r --root "$t/data" -e "$m" --no-progress 2> "$t/err")
echo "$out"
grep -q "longer than 64 embedding tokens" <<< "$out" || { echo "FAIL: no cap summary"; cat "$t/err"; exit 1; }
test -f "$t/data/knowledge_base/samples/vector_store/bge-m3-tiny/index.faiss" || { echo "FAIL: vector store folder"; exit 1; }
s=$("$pdsd" kb search --root "$t/data" -n samples --mode dense "如何安装" 2>&1)
echo "$s"
grep -q "cosine similarity" <<< "$s" && grep -q "^\[1\] score" <<< "$s" || { echo "FAIL: dense search"; exit 1; }
# tokenizer.json alone: refused with a message naming sentencepiece.bpe.model
rm "$m/sentencepiece.bpe.model"
cp "$src/tests/model/fixtures/tiny-xlmr/tokenizer.json" "$m/"
if "$pdsd" kb -r --root "$t/data" -e "$m" --no-progress > "$t/out2" 2>&1; then echo "FAIL: accepted a folder without sentencepiece.bpe.model"; exit 1; fi
grep -q "sentencepiece.bpe.model" "$t/out2" || { echo "FAIL: message"; cat "$t/out2"; exit 1; }
echo OK
