#!/usr/bin/env bash
# ctest: data-parallel training through the c10d TCPStore (train/distributed.h) on CPU.
# Two pdsd ranks (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT as torchrun sets them),
# per-device batch 4 x accumulation 1, give the same curve as one process with batch 4 x
# accumulation 2 (configs/sft_tiny.yaml, val_size 8: 36 examples = 9 micro-batches, 2 epochs = 10
# steps; the last step of each epoch has one micro-batch, so rank 1 contributes nothing there):
#   grad_norm and eval_loss (logged unrounded) within 1e-5 relative, loss (rounded to 4
#   decimals as HF logs it) within one rounding unit, num_input_tokens_seen equal.
# Then the 2-rank run is resumed from checkpoint-4 and must log the same again, also with
# lora_dropout 0.1 (per-rank generator states in the checkpoint).
#   data_parallel.sh PDSD SOURCE_DIR FIXTURES_DIR
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$SRC"
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
common=(train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --num_train_epochs 2 --save_steps 4
        --eval_steps 3 --val_size 8 --plot_loss false --lora_dropout 0 --per_device_train_batch_size 4)

"$PDSD" --threads 1 "${common[@]}" --gradient_accumulation_steps 2 --output_dir "$W/one" 2>"$W/one.log" || {
  cat "$W/one.log"; exit 1; }

run2() {  # run2 OUT [ARGS...]: two ranks on a free port
  local out=$1 port pids=() rc=0
  shift
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && continue  # taken
    break
  done
  for r in 0 1; do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$PDSD" --threads 1 "${common[@]}" --gradient_accumulation_steps 1 --output_dir "$out" "$@" 2>"$out.rank$r.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [[ $rc == 0 ]] || { cat "$out".rank*.log; exit 1; }
}
run2 "$W/two"
grep -q "data parallel: 2 ranks, 4 x 1 x 2 = 8 examples per step" "$W/two.rank0.log" || { cat "$W/two.rank0.log"; exit 1; }
[[ ! -e $W/two/rng_state_1.hex && -s $W/two/checkpoint-4/rng_state_1.hex ]] || { echo "rank 1 rng state missing"; ls -R "$W/two"; exit 1; }

# compare FIELD rel|round between trainer_state.json log_history of two runs
compare() {
  local a=$1 b=$2
  for field in grad_norm eval_loss loss num_input_tokens_seen; do
    paste <(grep -o "\"$field\": [0-9.e+-]*" "$a" | cut -d' ' -f2) <(grep -o "\"$field\": [0-9.e+-]*" "$b" | cut -d' ' -f2) |
      awk -v f=$field '{ n++; d = $1 - $2; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2;
        tol = (f == "loss") ? 1.0001e-4 : (f == "num_input_tokens_seen" ? 0 : 1e-5 * s);
        if (s > 0 && d / s > worst) worst = d / s;
        if (d > tol) { printf "%s #%d: %s vs %s\n", f, n, $1, $2; bad = 1 } }
        END { if (n == 0) { print "no " f; exit 1 } ; printf "%s: %d values match (max relative diff %.3g)\n", f, n, worst; exit bad }'
  done
}
compare "$W/one/trainer_state.json" "$W/two/trainer_state.json"
[[ $(grep -c current_steps "$W/one/trainer_log.jsonl") == $(grep -c current_steps "$W/two/trainer_log.jsonl") ]]

# resume the 2-rank run from checkpoint-4
mkdir "$W/res" && cp -r "$W/two/checkpoint-4" "$W/res/" && cp "$W/two/trainer_log.jsonl" "$W/res/"
run2 "$W/res"
grep -q "resumed from .*checkpoint-4" "$W/res.rank0.log" || { cat "$W/res.rank0.log"; exit 1; }
compare "$W/one/trainer_state.json" "$W/res/trainer_state.json"

# with dropout each rank draws its own masks: resuming restores every rank's generator
# (checkpoint-N/rng_state_1.hex), so the resumed run logs what the uninterrupted one did
run2 "$W/twod" --lora_dropout 0.1
mkdir "$W/resd" && cp -r "$W/twod/checkpoint-4" "$W/resd/" && cp "$W/twod/trainer_log.jsonl" "$W/resd/"
run2 "$W/resd" --lora_dropout 0.1
compare "$W/twod/trainer_state.json" "$W/resd/trainer_state.json"
if cmp -s <(grep -o '"grad_norm": [0-9.e+-]*' "$W/one/trainer_state.json") <(grep -o '"grad_norm": [0-9.e+-]*' "$W/twod/trainer_state.json"); then
  echo "dropout 0.1 changed nothing"; exit 1
fi
echo "ok"
