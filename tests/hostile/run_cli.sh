#!/usr/bin/env bash
# Hostile input against every pdsd subcommand that reads files (issue #16).
#   tests/hostile/run_cli.sh PDSD [FIXTURES_DIR]
# The corpus is generated here (make_corpus.py; nothing big is committed). Each run is
# under `ulimit -v` (PDSD_HOSTILE_VMEM_KB, default 4 GiB) and `timeout` (PDSD_HOSTILE_TIMEOUT,
# default 120 s), and must end with the exit code expected (1: a user error, with a
# message on stderr), never a signal, never 2 "internal error". Exit 77 (skip) without python3.
set -u
PDSD=$(realpath "$1")
FIXTURES=${2:-$(dirname "$0")/../fixtures}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to generate the corpus"; exit 77; }
VMEM_KB=${PDSD_HOSTILE_VMEM_KB:-4194304}
TIMEOUT=${PDSD_HOSTILE_TIMEOUT:-120}

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
C=$W/corpus
python3 "$HERE/make_corpus.py" "$C" "$FIXTURES" || { echo "FAIL: corpus generation"; exit 1; }

runs=0
failures=0
fail() { echo "FAIL [$1]: $2"; failures=$((failures + 1)); }

# expect WANT_RC NAME PATTERN -- command...   (PATTERN: extended regex that stdout+stderr must match; "" = any)
expect() {
    local want=$1 name=$2 pattern=$3
    shift 4
    runs=$((runs + 1))
    local t0=$SECONDS
    ( ulimit -v "$VMEM_KB"; exec timeout -s KILL "$TIMEOUT" "$@" ) >"$W/out" 2>"$W/err" </dev/null
    local rc=$?
    local secs=$((SECONDS - t0))
    if [ "$rc" -ge 124 ]; then
        fail "$name" "killed or crashed: exit $rc after ${secs}s (124/137: timeout or memory; >128: signal $((rc - 128)))"
        tail -n 5 "$W/err"
        return
    fi
    if [ "$rc" -eq 2 ]; then
        fail "$name" "exit 2 (internal error) for a user's input: $(grep -m1 -i 'error' "$W/err")"
        return
    fi
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit $rc, expected $want"
        tail -n 5 "$W/err" "$W/out"
        return
    fi
    if [ "$want" -ne 0 ] && ! grep -qiE 'error' "$W/err"; then
        fail "$name" "exit $rc without an error message on stderr"
        return
    fi
    if [ -n "$pattern" ] && ! cat "$W/out" "$W/err" | grep -qaE -- "$pattern"; then
        fail "$name" "output does not match /$pattern/"
        tail -n 5 "$W/err" "$W/out"
        return
    fi
    echo "ok   [$name] exit $rc in ${secs}s: $(grep -m1 -aiE 'error' "$W/err" | cut -c1-150)"
}

# ---- knowledge-base documents: kb add (exit 1, file not left in content/) and kb split
for f in "$C"/docs/*; do
    b=$(basename "$f")
    R=$W/root_add_$b
    expect 1 "kb add $b" "could not be indexed" -- "$PDSD" kb --root "$R" --no-progress add -n h "$f"
    [ -e "$R/knowledge_base/h/content/$b" ] && fail "kb add $b" "the failed file stayed in content/"
    expect 1 "kb split $b" "" -- "$PDSD" kb split "$f"
done

# ---- a rebuild over hostile and good files: hostile ones failed, good ones indexed
R=$W/root_mix
mkdir -p "$R/knowledge_base/mix/content" "$R/knowledge_base/mix/vector_store/hash-ngram"
cp "$C"/docs/* "$C"/good/* "$R/knowledge_base/mix/content/"
ln -s /etc/hostname "$R/knowledge_base/mix/content/outside_link.txt"
ln -s "$R/knowledge_base/mix/content/readme.md" "$R/knowledge_base/mix/content/inside_link.md"
touch "$R/knowledge_base/mix/vector_store/hash-ngram/.index.faiss.tmp.999999999"   # a killed rebuild's temp file
n_docs=$(ls "$C"/docs | wc -l)   # every hostile document fails, nothing else does
expect 0 "kb -r over the hostile corpus" "failed $n_docs;" -- "$PDSD" kb --root "$R" -r -n mix --no-progress
cp "$W/out" "$W/rebuild.out"
for f in "$C"/docs/*; do
    grep -q "^failed *mix/$(basename "$f")" "$W/rebuild.out" || fail "kb -r" "$(basename "$f") not reported failed"
done
for b in readme.md nul.txt huge_line.txt entities.html strings.json inside_link.md; do
    grep -q "^added *mix/$b" "$W/rebuild.out" || fail "kb -r" "good file $b not indexed"
done
grep -q "outside_link.txt.*symlink pointing outside content/ refused" "$W/rebuild.out" || fail "kb -r" "symlink out of content/ not refused"
[ -e "$R/knowledge_base/mix/vector_store/hash-ngram/.index.faiss.tmp.999999999" ] && fail "kb -r" "stale temp index not removed"
expect 0 "kb search --json with a non-UTF-8 file name" '"file_name": "bad_name_' -- "$PDSD" kb --root "$R" search -n mix --json --top_k 10 "file whose name"
expect 0 "kb list" "mix" -- "$PDSD" kb --root "$R" list

# ---- datasets: data validate and data preview
for d in "$C"/datasets/*; do
    b=$(basename "$d")
    expect 1 "data validate $b" "" -- "$PDSD" data validate --dataset d --dataset_dir "$d"
    expect 1 "data validate --json $b" "" -- "$PDSD" data validate --json --dataset d --dataset_dir "$d"
    expect 1 "data preview $b" "" -- "$PDSD" data preview --dataset d --dataset_dir "$d"
done
expect 1 "data validate content: null" "content" -- "$PDSD" data validate --dataset d --dataset_dir "$C/datasets/content_null"
expect 1 "data validate deep record" "nesting deeper than 512" -- "$PDSD" data validate --dataset d --dataset_dir "$C/datasets/deep_record"

# ---- tokenizers
for t in "$C"/tok/*; do
    expect 1 "tokenize --tokenizer tok/$(basename "$t")" "" -- "$PDSD" tokenize --tokenizer "$t" "hello"
done
if [ -d "$C/tok/added_tokens_string" ]; then
    expect 1 "tokenizer added_tokens: \"x\"" "added_tokens" -- "$PDSD" tokenize --tokenizer "$C/tok/added_tokens_string" "<|im_end|>"
    expect 1 "data validate with a tokenizer lacking <|im_end|>" "missing special token" -- \
        "$PDSD" data validate --dataset d --dataset_dir "$C/datasets/wrong_types" --tokenizer "$C/tok_ok/no_added_tokens"
fi

# ---- kb_settings.yaml values and CLI numbers
for s in "$C"/settings/*; do
    expect 1 "kb_settings $(basename "$s")" "kb_settings.yaml" -- "$PDSD" kb --root "$s" -r --no-progress
done
expect 1 "kb -r --chunk_size -5" "chunk_size" -- "$PDSD" kb --root "$R" -r -n mix --chunk_size -5 --no-progress
expect 1 "kb search --top_k -3" "top_k" -- "$PDSD" kb --root "$R" search -n mix --top_k -3 "x"
expect 1 "kb split --chunk_size -5" "chunk_size" -- "$PDSD" kb split --chunk_size -5 "$C/good/readme.md"
expect 1 "kb split --batch without chunk_size" "chunk_size" -- "$PDSD" kb split --batch "$C/split_no_size.jsonl"
expect 1 "kb split --batch chunk_size -5" "chunk_size" -- "$PDSD" kb split --batch "$C/split_negative.jsonl"
expect 1 "kb split --batch deep" "nesting deeper" -- "$PDSD" kb split --batch "$C/split_deep.jsonl"
expect 1 "kb embed --jsonl with a line 5" "line 2" -- "$PDSD" kb embed -e hash-ngram --jsonl "$C/embed_number.jsonl"
expect 1 "kb embed --jsonl deep" "nesting deeper" -- "$PDSD" kb embed -e hash-ngram --jsonl "$C/embed_deep.jsonl"
expect 1 "kb eval --qa deep" "nesting deeper" -- "$PDSD" kb --root "$R" eval -n mix --qa "$C/qa_deep.jsonl"
expect 1 "model logits --ids a,b" "--ids" -- "$PDSD" model logits --model "$W/none" --ids a,b --out "$W/l.safetensors"
expect 1 "model logits --ids -1" "--ids" -- "$PDSD" model logits --model "$W/none" --ids 1,-1 --out "$W/l.safetensors"
expect 1 "kb --root that is a file (-r)" "" -- "$PDSD" kb --root "$C/not_a_folder" -r --no-progress
expect 1 "kb --root that is a file (add)" "" -- "$PDSD" kb --root "$C/not_a_folder" add -n x "$C/good/readme.md"
expect 1 "model init --out that is a file" "not a folder" -- "$PDSD" model init --preset tiny --out "$C/not_a_folder"
if [ "$(id -u)" -ne 0 ]; then   # root writes anywhere
    mkdir -p "$W/ro" && chmod 555 "$W/ro"
    expect 1 "kb --root unwritable" "" -- "$PDSD" kb --root "$W/ro" add -n x "$C/good/readme.md"
fi

echo "hostile CLI: $runs runs, $failures failure(s)"
[ "$failures" -eq 0 ]
