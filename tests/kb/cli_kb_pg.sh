#!/usr/bin/env bash
# vs_type pg from the CLI (issue #22): pdsd kb -r, kb list and kb search on a KB in the
# pg_server fixture's PostgreSQL; then two `pdsd serve` processes on that KB: upload_docs
# through one is seen at once by search_docs on the other, and so is a rebuild by a third
# process (rag::Retriever reopens when the KB's generation in PostgreSQL moved); the local
# info.db is never made. Skips (77) without the fixture's server.
#   cli_kb_pg.sh PDSD PG_TEST_DIR
set -u
pdsd=$1
state=$2
if [ ! -s "$state/dsn" ]; then
  echo "SKIP: $(cat "$state/skip" 2>/dev/null || echo 'no PostgreSQL test server (see pg_server_start)')"
  exit 77
fi
PGPASSWORD=$(cat "$state/password")
export PGPASSWORD
dsn=$(cat "$state/dsn")
psql="$(cat "$state/bin")/psql"
schema=cli_kb_pg_$$
d=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$psql" -q "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1
  rm -rf "$d"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$d"/*.err; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

"$psql" -q "$dsn" -c "CREATE SCHEMA $schema" || fail "psql CREATE SCHEMA"
root=$d/data
"$pdsd" init --root "$root" -e hash-ngram >/dev/null 2>"$d/init.err" || fail "pdsd init"
printf 'vs_type: pg\npg_connection_uri: %s?options=-csearch_path%%3D%s%%2Cpublic\n' "$dsn" "$schema" >>"$root/kb_settings.yaml"

"$pdsd" kb -r -n samples --root "$root" --no-progress >"$d/kb.out" 2>"$d/kb.err" || fail "kb -r"
[ -e "$root/knowledge_base/info.db" ] && fail "kb -r on pg wrote the local info.db"
n=$("$psql" -Atq "$dsn" -c "SELECT chunk_count FROM $schema.knowledge_base WHERE kb_name = 'samples'")
[ "${n:-0}" -gt 0 ] || fail "no chunks in PostgreSQL ($n)"
"$pdsd" kb list --root "$root" >"$d/list.out" 2>"$d/list.err" || fail "kb list"
grep -Eq "samples .*chunks $n " "$d/list.out" || fail "kb list (want samples with $n chunks): $(cat "$d/list.out")"
for mode in bm25 dense hybrid; do
  "$pdsd" kb search -n samples --root "$root" --mode "$mode" "证书过期怎么处理" >"$d/search.out" 2>"$d/search.err" || fail "kb search --mode $mode"
  grep -q "错误码.csv" "$d/search.out" || fail "kb search --mode $mode: $(cat "$d/search.out")"
done
echo "kb -r / list / search on pg ok ($n chunks)"

start_serve() {   # $1: name; the server's URL lands in $d/$1.url
  "$pdsd" serve --port 0 --root "$root" --model none >"$d/$1.out" 2>"$d/$1.err" &
  pids+=($!)
}
wait_url() {   # $1: name; prints the URL
  local url
  for _ in $(seq 400); do
    url=$(sed -nE 's#.*pdsd serve: (http://[^ ]+).*#\1#p' "$d/$1.err")
    [ -n "$url" ] && { echo "$url"; return 0; }
    sleep 0.05
  done
  return 1
}
start_serve a
start_serve b
a=$(wait_url a) || fail "serve a printed no URL"
b=$(wait_url b) || fail "serve b printed no URL"
search() {   # $1: server URL, $2: query -> the response body
  curl -sf "$1/knowledge_base/search_docs" -H 'Content-Type: application/json' \
    -d "{\"query\": \"$2\", \"knowledge_base_name\": \"samples\", \"top_k\": 3}"
}
q="量子隧穿校准步骤"
for u in "$a" "$b"; do
  body=$(search "$u" "$q") || fail "search_docs on $u"
  case $body in *新增.md*) fail "new file found before it exists";; \[*) ;; *) fail "search_docs: $body";; esac
done

printf '# 新增\n\n量子隧穿校准步骤：先冷却探头，再读数。\n' >"$root/knowledge_base/samples/content/新增.md"
"$pdsd" kb -r -n samples --root "$root" --no-progress >/dev/null 2>"$d/kb2.err" || fail "second kb -r"
for u in "$b" "$a"; do
  body=$(search "$u" "$q") || fail "search_docs on $u after the rebuild"
  case $body in *新增.md*) ;; *) fail "$u does not see the rebuild: $body";; esac
done
echo "two servers see a third process's rebuild at once ok"

printf '# 上传\n\n光纤熔接损耗超标时清洁端面后重熔。\n' >"$d/上传.md"
q2="光纤熔接损耗超标"
body=$(search "$b" "$q2") || fail "search_docs on b"
case $body in *上传.md*) fail "uploaded file found before the upload";; esac
up=$(curl -sf "$a/knowledge_base/upload_docs" -F "files=@$d/上传.md" -F knowledge_base_name=samples) || fail "upload_docs on a"
case $up in *'"code":200'*) ;; *) fail "upload_docs: $up";; esac
body=$(search "$b" "$q2") || fail "search_docs on b after the upload"
case $body in *上传.md*) ;; *) fail "b does not see a's upload: $body";; esac
files=$(curl -sf "$b/knowledge_base/list_files?knowledge_base_name=samples") || fail "list_files on b"
case $files in *上传.md*) ;; *) fail "list_files on b: $files";; esac
mk=$(curl -sf "$a/knowledge_base/create_knowledge_base" -H 'Content-Type: application/json' \
  -d '{"knowledge_base_name": "team", "vector_store_type": "pg", "embed_model": "hash-ngram", "kb_info": "团队"}') || fail "create_knowledge_base pg on a"
case $mk in *'"code":200'*) ;; *) fail "create_knowledge_base: $mk";; esac
kbs=$(curl -sf "$b/knowledge_base/list_knowledge_bases") || fail "list_knowledge_bases on b"
case $kbs in *'"kb_info":"团队","kb_name":"team"'*) ;; *) fail "b does not list a's new KB: $kbs";; esac
[ -e "$root/knowledge_base/info.db" ] && fail "the servers wrote the local info.db"
echo "upload_docs / create_knowledge_base on one server, search_docs / list on the other see it at once ok"

"$pdsd" kb migrate --to local --root "$root" --no-progress >"$d/migrate.out" 2>"$d/migrate.err" || fail "kb migrate --to local: $(cat "$d/migrate.out")"
grep -q "vs_type is now faiss" "$d/migrate.out" || fail "kb migrate: $(cat "$d/migrate.out")"
grep -q "^vs_type: faiss" "$root/kb_settings.yaml" || fail "kb_settings.yaml not switched: $(grep vs_type "$root/kb_settings.yaml")"
[ -e "$root/knowledge_base/info.db" ] || fail "no local store after migrate --to local"
"$pdsd" kb search -n samples --root "$root" --mode hybrid "$q2" >"$d/search.out" 2>"$d/search.err" || fail "kb search after migrate"
grep -q "上传.md" "$d/search.out" || fail "the local store after migrate lacks the upload: $(cat "$d/search.out")"
"$pdsd" kb migrate --to local --root "$root" >"$d/migrate2.out" 2>"$d/migrate2.err" && fail "a second migrate --to local succeeded"
grep -q "already" "$d/migrate2.err" || fail "migrate to the current store: $(cat "$d/migrate2.err")"
echo "kb migrate --to local ok"
