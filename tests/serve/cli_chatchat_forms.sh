#!/usr/bin/env bash
# Chatchat's CLI spellings on pdsd: `init -l NAME -e NAME [-x URL] [-r -k KB]`,
# `kb --recreate-vs`, `start -a | --api | -w` (Chatchat's 127.0.0.1:7861 defaults), and
# `serve` finding the model through model_settings.yaml and `-e NAME` under <root>/models.
set -u
pdsd=$1 fx=$2
d=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$d"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
R=$d/data

# init -l -e -x: the names go into the settings files (comments kept), a note where the folders go
out=$("$pdsd" init --root "$R" -l qwen2.5-instruct -e bge-large-zh-v1.5 -x http://127.0.0.1:9997/v1) || fail "init -l -e -x exit $?"
grep -q '^default_llm_model: qwen2.5-instruct' "$R/model_settings.yaml" || fail "default_llm_model not set: $(cat "$R/model_settings.yaml")"
grep -q '^llm_model_path: models/qwen2.5-instruct' "$R/model_settings.yaml" || fail "llm_model_path not set"
grep -q '^default_embedding_model: bge-large-zh-v1.5' "$R/model_settings.yaml" || fail "default_embedding_model not set"
grep -q '^api_base_url: http://127.0.0.1:9997/v1' "$R/model_settings.yaml" || fail "api_base_url not set"
grep -qE '^embed_model: bge-large-zh-v1.5 +# none = BM25' "$R/kb_settings.yaml" || fail "embed_model not set (or comment lost): $(grep embed_model "$R/kb_settings.yaml")"
grep -q "$R/models/bge-large-zh-v1.5" <<< "$out" || fail "no note where the embedding model folder goes: $out"
# the settings files stay valid YAML that pdsd reads: kb -r now wants that embedder
if "$pdsd" kb -r --root "$R" --no-progress 2> "$d/e.txt"; then fail "kb -r without the bge folder should fail"; fi
grep -q "bge-large-zh-v1.5" "$d/e.txt" || fail "kb -r error does not name the model: $(cat "$d/e.txt")"
# a second init with other names updates the existing files
"$pdsd" init --root "$R" -l tiny -e none > /dev/null || fail "second init"
grep -q '^default_llm_model: tiny' "$R/model_settings.yaml" && grep -q '^embed_model: none' "$R/kb_settings.yaml" || fail "second init did not update"
test "$(grep -c '^embed_model:' "$R/kb_settings.yaml")" = 1 || fail "embed_model duplicated"

# kb --recreate-vs is kb -r
"$pdsd" kb --recreate-vs --root "$R" --no-progress | grep -q "added 6, updated 0, removed 0" || fail "kb --recreate-vs"
# init -r -k: rebuild right away (Chatchat's init -r)
"$pdsd" init --root "$R" -e hash-ngram -r -k samples | grep -q "^rebuilt 6 file" || fail "init -r -k samples"
test -f "$R/knowledge_base/samples/vector_store/hash-ngram/index.faiss" || fail "init -r -e hash-ngram: no vector store"

# start: no mode flag is an error (exit 1); its defaults are Chatchat's API address
"$pdsd" start --root "$R" > /dev/null 2> "$d/s.txt"
rc=$?
[ $rc = 1 ] && grep -q -- "-a, --api or -w" "$d/s.txt" || fail "start without -a/--api/-w: exit $rc $(cat "$d/s.txt")"
help=$("$pdsd" start --help)
grep -q "7861" <<< "$help" && grep -q "127.0.0.1" <<< "$help" || fail "start defaults are not 127.0.0.1:7861: $help"

# the tiny model named in model_settings.yaml (-l tiny) is found under <root>/models
"$pdsd" --log-level warn model init --preset tiny --tokenizer "$fx/qwen-tokenizer" --out "$R/models/tiny" > /dev/null || fail "model init"
wait_url() {   # $1: stderr file -> prints the URL
  local u=""
  for _ in $(seq 400); do
    u=$(sed -nE 's#.*pdsd serve: (http://[^ ]+).*#\1#p' "$1")
    [ -n "$u" ] && break
    sleep 0.05
  done
  echo "$u"
}
for flag in -a --api -w; do
  "$pdsd" start $flag --port 0 --root "$R" -e hash-ngram 2> "$d/start.err" &
  pid=$!
  pids+=($pid)
  url=$(wait_url "$d/start.err")
  [ -n "$url" ] || { cat "$d/start.err"; fail "start $flag: no URL"; }
  case $url in http://127.0.0.1:*) ;; *) fail "start $flag not on 127.0.0.1: $url" ;; esac
  curl -sf "$url/" | grep -qi '<html' || fail "start $flag: no page"
  curl -sf "$url/knowledge_base/list_knowledge_bases" | grep -q '"kb_name":"samples"' || fail "start $flag: no KB API"
  models=$(curl -sf "$url/v1/models")
  grep -q '"id":"tiny"' <<< "$models" && grep -q '"id":"hash-ngram"' <<< "$models" || fail "start $flag: model from model_settings.yaml / -e: $models"
  kill -s INT $pid
  wait $pid
  rc=$?
  [ $rc = 130 ] || fail "start $flag: SIGINT exit $rc"
  echo "start $flag ok ($url)"
done

# serve --model NAME: a name under <root>/models; a missing one is a clear error (exit 1)
"$pdsd" serve --root "$R" --port 0 --model nosuch 2> "$d/m.txt"
rc=$?
[ $rc = 1 ] && grep -q "models/nosuch\|nosuch" "$d/m.txt" || fail "serve --model nosuch: exit $rc $(cat "$d/m.txt")"
echo OK
