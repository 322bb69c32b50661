#!/usr/bin/env bash
# ctest: a tiny random-weight Qwen2 (real Qwen tokenizer) trained on the demo data with
# configs/sft_tiny.yaml: the loss goes down and LLaMA-Factory's outputs exist.
#   sft_tiny.sh PDSD SOURCE_DIR FIXTURES_DIR
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC"
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
# --dry-run: the plan on stdout, nothing written
"$PDSD" train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --output_dir "$W/dry" --dry-run >"$W/plan" 2>"$W/log"
grep -q "examples: 40 train, 4 eval" "$W/plan" && grep -q "steps: 5 per epoch, 15 total" "$W/plan" &&
  grep -q "trainable params: " "$W/plan" && grep -q "peak memory estimate" "$W/plan" || { cat "$W/plan" "$W/log"; exit 1; }
[[ ! -e $W/dry ]] || { echo "--dry-run wrote $W/dry"; exit 1; }
# gradient checkpointing: on by default (LLaMA-Factory), off with disable_gradient_checkpointing
grep -q "gradient checkpointing: on" "$W/plan" || { echo "checkpointing not on by default"; cat "$W/plan"; exit 1; }
"$PDSD" train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --output_dir "$W/dry" --dry-run \
  --disable_gradient_checkpointing true >"$W/plan_off" 2>>"$W/log"
grep -q "gradient checkpointing: off" "$W/plan_off" || { cat "$W/plan_off"; exit 1; }
"$PDSD" --threads 2 train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --output_dir "$W/out" 2>"$W/log" >"$W/stdout" || {
  cat "$W/log"; exit 1; }
for f in adapter_model.safetensors adapter_config.json trainer_log.jsonl trainer_state.json train_results.json \
         all_results.json training_loss.png training_eval_loss.png checkpoint-4/adapter_model.safetensors \
         checkpoint-4/optimizer.safetensors checkpoint-4/trainer_state.json checkpoint-4/pdsd_resume.json; do
  [[ -s $W/out/$f ]] || { echo "missing output: $f"; ls -R "$W/out"; exit 1; }
done
grep -q '"current_steps": 15, "total_steps": 15' "$W/out/trainer_log.jsonl" || { echo "no step 15 line"; cat "$W/out/trainer_log.jsonl"; exit 1; }
grep -q '"eval_loss"' "$W/out/trainer_log.jsonl" || { echo "no eval_loss line"; exit 1; }
# first and last 3 logged losses: the mean must drop
losses=$(sed -n 's/.*"loss": \([0-9.e+-]*\),.*/\1/p' "$W/out/trainer_log.jsonl")
echo "$losses" | awk '{v[NR]=$1} END {f=(v[1]+v[2]+v[3])/3; l=(v[NR]+v[NR-1]+v[NR-2])/3;
  printf "first3 %.4f last3 %.4f\n", f, l; exit !(l < f - 0.05)}'
grep -q "steps: 15" "$W/stdout"
grep -q "each decoder layer recomputed in backward" "$W/log" || { echo "checkpointing not used in training"; exit 1; }
echo "ok"
