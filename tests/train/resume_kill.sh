#!/usr/bin/env bash
# ctest: a run killed with SIGKILL mid-way and started again resumes from its newest
# checkpoint and logs the same losses (and ends with the same adapter bytes) as an
# uninterrupted run; Ctrl-C (SIGINT) saves a checkpoint and exits 130.
#   resume_kill.sh PDSD SOURCE_DIR FIXTURES_DIR
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC"
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
CMD=("$PDSD" --threads 1 train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --save_steps 3 --max_steps 8 --eval_steps 100 --plot_loss false)
run() { "${CMD[@]}" --output_dir "$1"; }
# In the background with exec, so that $! is pdsd itself (signals reach it, not a subshell).
run_bg() { ( exec "${CMD[@]}" --output_dir "$1" ) 2>"$2" >/dev/null & }
losses() { sed -n 's/.*"current_steps": \([0-9]*\),.*"loss": \([0-9.e+-]*\),.*/\1 \2/p' "$1/trainer_log.jsonl"; }
wait_lines() {  # $1 file, $2 lines, $3 pid
  for _ in $(seq 1 2000); do
    [[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.02
  done; return 1
}

run "$W/a" 2>"$W/a.log" >/dev/null || { cat "$W/a.log"; exit 1; }

# SIGKILL after step 5's log line (checkpoint-3 exists), then start the same command again.
run_bg "$W/b" "$W/b1.log"; pid=$!
wait_lines "$W/b/trainer_log.jsonl" 5 $pid || { echo "run b ended before it could be killed"; cat "$W/b1.log"; exit 1; }
kill -9 $pid; wait $pid 2>/dev/null || true
ls "$W/b" | grep -q checkpoint- || { echo "no checkpoint before the kill"; exit 1; }
run "$W/b" 2>"$W/b2.log" >/dev/null || { cat "$W/b2.log"; exit 1; }
grep -q "resumed from .*checkpoint-" "$W/b2.log" || { echo "did not resume"; cat "$W/b2.log"; exit 1; }
diff <(losses "$W/a") <(losses "$W/b") || { echo "losses differ after SIGKILL + resume"; exit 1; }
cmp "$W/a/adapter_model.safetensors" "$W/b/adapter_model.safetensors" || { echo "final adapters differ"; exit 1; }
# train_loss averages every step of the run, the ones before the kill included.
tl() { grep -o '"train_loss": [0-9.e+-]*' "$1/train_results.json"; }
[[ -n $(tl "$W/a") && $(tl "$W/a") == "$(tl "$W/b")" ]] || { echo "train_loss after resume: $(tl "$W/b"), uninterrupted: $(tl "$W/a")"; exit 1; }

# Ctrl-C: checkpoint at the current step, exit 130; resuming finishes with the same losses.
run_bg "$W/c" "$W/c1.log"; pid=$!
wait_lines "$W/c/trainer_log.jsonl" 2 $pid || { echo "run c ended too early"; exit 1; }
kill -INT $pid; rc=0; wait $pid || rc=$?
[[ $rc == 130 ]] || { echo "Ctrl-C exit code $rc, expected 130"; cat "$W/c1.log"; exit 1; }
grep -q "interrupted: checkpoint-" "$W/c1.log" || { echo "no checkpoint on Ctrl-C"; cat "$W/c1.log"; exit 1; }
run "$W/c" 2>"$W/c2.log" >/dev/null || { cat "$W/c2.log"; exit 1; }
diff <(losses "$W/a") <(losses "$W/c") || { echo "losses differ after Ctrl-C + resume"; exit 1; }
[[ $(tl "$W/a") == "$(tl "$W/c")" ]] || { echo "train_loss after Ctrl-C + resume: $(tl "$W/c"), uninterrupted: $(tl "$W/a")"; exit 1; }

# Changed hyper-parameters are refused.
if "${CMD[@]}" --output_dir "$W/b" --learning_rate 1e-4 2>"$W/d.log" >/dev/null; then echo "resume with another lr was accepted"; exit 1; fi
grep -q "learning_rate" "$W/d.log" || { cat "$W/d.log"; exit 1; }
echo "ok"
