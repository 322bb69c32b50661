#!/usr/bin/env bash
# ctest train_methods_resume: finetuning_type freeze and full, and QLoRA 4-bit and 8-bit (tiny random Qwen2,
# CPU). A run killed with SIGKILL and started again resumes from its newest checkpoint-N and ends
# with the same logged losses and the same output bytes as an uninterrupted run (model.safetensors,
# or QLoRA's adapter_model.safetensors); `pdsd chat` answers from the output folder (QLoRA: the
# adapter on the base); a changed freeze key or quantization_bit is refused.
#   resume_methods.sh PDSD SOURCE_DIR FIXTURES_DIR
set -euo pipefail
PDSD=$1; SRC=$2; FIX=$3
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC"
"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null
BASE=("$PDSD" --threads 1 train configs/sft_tiny.yaml --model_name_or_path "$W/tiny" --max_samples 8 --val_size 0
      --eval_strategy no --plot_loss false --cutoff_len 64 --per_device_train_batch_size 2 --gradient_accumulation_steps 1
      --save_steps 2 --max_steps 6 --warmup_steps 1 --learning_rate 1e-3)
losses() { sed -n 's/.*"current_steps": \([0-9]*\),.*"loss": \([0-9.e+-]*\),.*/\1 \2/p' "$1/trainer_log.jsonl"; }
wait_lines() {  # $1 file, $2 lines, $3 pid
  for _ in $(seq 1 3000); do
    [[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.02
  done; return 1
}
check_method() {  # $1 name, $2 model | adapter (what the output folder is), then the method's keys
  local name=$1 kind=$2; shift 2
  local CMD=("${BASE[@]}" "$@") out=model.safetensors chat_args=(--model "$W/$name-a")
  [[ $kind == adapter ]] && out=adapter_model.safetensors chat_args=(--model "$W/tiny" --adapter "$W/$name-a")
  "${CMD[@]}" --output_dir "$W/$name-a" 2>"$W/$name-a.log" >/dev/null || { cat "$W/$name-a.log"; exit 1; }
  ( exec "${CMD[@]}" --output_dir "$W/$name-b" ) 2>"$W/$name-b1.log" >/dev/null & local pid=$!
  wait_lines "$W/$name-b/trainer_log.jsonl" 3 $pid || { echo "$name: run b ended before it could be killed"; cat "$W/$name-b1.log"; exit 1; }
  kill -9 $pid; wait $pid 2>/dev/null || true
  ls "$W/$name-b" | grep -q checkpoint- || { echo "$name: no checkpoint before the kill"; exit 1; }
  "${CMD[@]}" --output_dir "$W/$name-b" 2>"$W/$name-b2.log" >/dev/null || { cat "$W/$name-b2.log"; exit 1; }
  grep -q "resumed from .*checkpoint-" "$W/$name-b2.log" || { echo "$name: did not resume"; cat "$W/$name-b2.log"; exit 1; }
  [[ $(losses "$W/$name-a" | wc -l) == 6 ]] || { echo "$name: expected 6 logged steps"; losses "$W/$name-a"; exit 1; }
  diff <(losses "$W/$name-a") <(losses "$W/$name-b") || { echo "$name: losses differ after SIGKILL + resume"; exit 1; }
  cmp "$W/$name-a/$out" "$W/$name-b/$out" || { echo "$name: final $out differ"; exit 1; }
  local files=(checkpoint-6/$out checkpoint-6/pdsd_resume.json)
  [[ $kind == model ]] && files+=(config.json generation_config.json tokenizer.json tokenizer_config.json checkpoint-6/optimizer.safetensors)
  for f in "${files[@]}"; do
    [[ -s $W/$name-a/$f ]] || { echo "$name: missing $f"; ls -R "$W/$name-a"; exit 1; }
  done
  "$PDSD" --threads 1 chat "${chat_args[@]}" -q "你好" --max_new_tokens 4 --device cpu >"$W/$name-chat.out" 2>"$W/$name-chat.log" ||
    { echo "$name: pdsd chat could not use the output folder"; cat "$W/$name-chat.log"; exit 1; }
  echo "$name: ok ($(losses "$W/$name-a" | head -1) ... $(losses "$W/$name-a" | tail -1))"
}
check_method freeze model --finetuning_type freeze --freeze_trainable_layers 1 --freeze_trainable_modules mlp,self_attn --freeze_extra_modules norm
check_method full model --finetuning_type full
check_method qlora adapter --finetuning_type lora --lora_target all --quantization_bit 4 --quantization_type nf4 --double_quantization true
check_method qlora8 adapter --finetuning_type lora --lora_target all --quantization_bit 8
# A finished output folder of another trajectory is refused, naming the key that changed.
if "${BASE[@]}" --finetuning_type freeze --freeze_trainable_layers 2 --output_dir "$W/freeze-b" 2>"$W/d.log" >/dev/null; then
  echo "resume with another freeze_trainable_layers was accepted"; exit 1; fi
grep -q "freeze_trainable_layers" "$W/d.log" || { cat "$W/d.log"; exit 1; }
# The base's storage is part of the trajectory: an 8-bit QLoRA folder does not resume in 4 bits.
if "${BASE[@]}" --finetuning_type lora --lora_target all --quantization_bit 4 --output_dir "$W/qlora8-b" 2>"$W/q.log" >/dev/null; then
  echo "resume with another quantization_bit was accepted"; exit 1; fi
grep -q "quantization_bit" "$W/q.log" || { cat "$W/q.log"; exit 1; }
echo "ok"
