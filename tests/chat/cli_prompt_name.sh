#!/bin/sh
# pdsd chat --kb --prompt_name: the named rag template of <root>/prompt_settings.yaml reaches the
# model (the encoded prompt is shorter with a bare template than with Chatchat's default), an
# unknown name is exit 1 naming the flag, the known names and the file, before the model loads.
# Usage: cli_prompt_name.sh PDSD FIXTURES
set -u
PDSD=$1
FIXTURES=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$PDSD" init --root "$T/d" >/dev/null || fail "init"
"$PDSD" kb -r --root "$T/d" --no-progress >/dev/null 2>&1 || fail "kb -r"
"$PDSD" model init --preset tiny --tokenizer "$FIXTURES/qwen-tokenizer" --out "$T/m" >/dev/null 2>&1 || fail "model init"
grep -q '^rag:$' "$T/d/prompt_settings.yaml" || fail "init wrote no rag: section"
printf '  bare: "{{context}}{{question}}"\n' >> "$T/d/prompt_settings.yaml"   # rag is the file's last section

tokens() {   # the prompt length pdsd chat logs for --prompt_name $1
  "$PDSD" --log-level debug chat --root "$T/d" --model "$T/m" --kb samples --prompt_name "$1" -q '如何安装' \
    --temperature 0 --max_new_tokens 2 2>&1 >/dev/null | sed -n 's/.*prompt encoded (\([0-9]*\) tokens).*/\1/p' | head -n 1
}
d=$(tokens default)
b=$(tokens bare)
echo "prompt tokens: default $d, bare $b"
[ -n "$d" ] && [ -n "$b" ] || fail "no 'prompt encoded' debug line"
[ "$b" -lt "$d" ] || fail "the bare template did not shorten the prompt ($b >= $d)"

out=$("$PDSD" chat --root "$T/d" --model "$T/m" --kb samples --prompt_name nope -q x 2>&1); rc=$?
echo "$out"
[ "$rc" -eq 1 ] || fail "unknown --prompt_name exited $rc"
for want in "--prompt_name" "'nope'" "default, empty, bare" "$T/d/prompt_settings.yaml"; do
  case "$out" in *"$want"*) ;; *) fail "the error does not name $want" ;; esac
done
case "$out" in *"loaded"*) fail "the model loaded before the name was checked" ;; esac
"$PDSD" chat --root "$T/d" --model "$T/m" --prompt_name bare -q x >/dev/null 2>&1
[ $? -eq 1 ] || fail "--prompt_name without --kb is not exit 1"
echo PASS
