#!/usr/bin/env bash
# ctest `cli_lf_document`: the project document's LLaMA-Factory command lines, pasted with
# only the paths swapped for the tiny fixtures, must run unchanged:
#   - the fine-tuning line (bare --use_fast_tokenizer / --flash_attn / --overwrite_cache /
#     --do_train / --plot_loss / --bf16, --deepspeed CONFIG, warmup 100 > total steps,
#     lr 5e-6: a flat loss curve that must still plot), in one process and under torchrun with
#     2 CPU ranks (--no-python pdsd train);
#   - the export line (CUDA_VISIBLE_DEVICES=0, --export_size 2 --export_legacy_format False);
#   - the LLaMA-Factory verbs and spellings: version, a mistyped verb (did-you-mean), chat with
#     an inference YAML, --kebab-case keys; a hub id without a local folder (clear hint);
#     invalid values rejected (exit 1).
#   lf_document_cli.sh PDSD SOURCE_DIR FIXTURES_DIR
set -uo pipefail
PDSD=$1; SRC=$2; FIX=$3
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$SRC" || exit 2
fail() { echo "FAIL: $*"; [[ -f $W/log ]] && tail -30 "$W/log"; exit 1; }

"$PDSD" model init --preset tiny --tokenizer "$FIX/qwen-tokenizer" --out "$W/tiny" >/dev/null 2>&1 || fail "model init"
echo '{"train_batch_size": "auto", "zero_optimization": {"stage": 0}}' >"$W/ds_z0_config.json"
DS_CONFIG_PATH=$W/ds_z0_config.json
doc_args() {  # the document's argument list; $1 = output_dir
  echo --deepspeed $DS_CONFIG_PATH --stage sft --do_train --use_fast_tokenizer --flash_attn \
    --model_name_or_path "$W/tiny" --dataset helpdesk_alpaca_zh --template qwen --finetuning_type lora \
    --lora_target q_proj,v_proj --output_dir "$1" --overwrite_cache --overwrite_output_dir --warmup_steps 100 \
    --weight_decay 0.1 --per_device_train_batch_size 4 --gradient_accumulation_steps 4 --ddp_timeout 9000 \
    --learning_rate 5e-6 --lr_scheduler_type cosine --logging_steps 1 --cutoff_len 4096 --save_steps 1000 \
    --plot_loss --num_train_epochs 3 --bf16
}

# 1. one process
# shellcheck disable=SC2046
"$PDSD" --threads 2 train $(doc_args "$W/one") >"$W/out" 2>"$W/log" || fail "train (one process) exit $?"
for f in adapter_model.safetensors adapter_config.json trainer_state.json training_loss.png; do
  [[ -s $W/one/$f ]] || fail "train wrote no $f"
done
grep -q "warmup_steps (100) >= total steps" "$W/log" || fail "no warning for warmup_steps >= total steps"
grep -q "below LLaMA-Factory's LoRA examples" "$W/log" || fail "no warning for the tiny learning rate"
grep -q "is accepted but not used" "$W/log" || fail "ignored keys are not reported"
# --dry-run warns too
"$PDSD" train $(doc_args "$W/dry") --dry-run >"$W/plan" 2>"$W/log" || fail "dry-run"
grep -q "warmup_steps (100) >= total steps" "$W/log" || fail "dry-run does not warn about warmup"

# 2. torchrun, 2 CPU ranks
TORCHRUN=$SRC/.venv/bin/torchrun
if [[ -x $TORCHRUN ]]; then
  port=$((20000 + RANDOM % 40000))
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=1 "$TORCHRUN" --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$port" --no-python \
    "$PDSD" --threads 1 train $(doc_args "$W/two") >"$W/out" 2>"$W/log" || fail "torchrun train exit $?"
  [[ -s $W/two/adapter_model.safetensors && -s $W/two/training_loss.png ]] || fail "torchrun run wrote no adapter/plot"
  grep -q "data parallel: 2 ranks" "$W/log" || fail "torchrun run was not data parallel"
else
  echo "note: no torchrun at $TORCHRUN (the torch venv); the 2-rank part did not run"
fi

# 3. export, as the document writes it
CUDA_VISIBLE_DEVICES=0 "$PDSD" export --model_name_or_path "$W/tiny" --adapter_name_or_path "$W/one" --template qwen \
  --finetuning_type lora --export_dir "$W/merged" --export_size 2 --export_legacy_format False >"$W/out" 2>"$W/log" ||
  fail "export exit $?"
grep -q "logits self-check: ok" "$W/out" || fail "export self-check did not run"
for f in model.safetensors config.json tokenizer.json pdsd_manifest.json Modelfile; do
  [[ -s $W/merged/$f ]] || fail "export wrote no $f"
done

# 4. verbs and spellings
"$PDSD" version | grep -q '^pdsd ' || fail "pdsd version"
"$PDSD" trian --config x.yaml >"$W/out" 2>"$W/log"; rc=$?
[[ $rc == 1 ]] && grep -q "did you mean 'pdsd train'" "$W/log" || fail "mistyped verb: exit $rc"
cat >"$W/infer.yaml" <<YAML
model_name_or_path: $W/tiny
adapter_name_or_path: $W/one
template: qwen
finetuning_type: lora
infer_backend: huggingface
do_sample: false
max_new_tokens: 4
YAML
"$PDSD" chat "$W/infer.yaml" -q "你好" >"$W/out" 2>"$W/log" || fail "chat with an inference YAML"
[[ -s $W/out ]] || fail "chat with an inference YAML printed no answer"
"$PDSD" train --dry-run --model-name-or-path "$W/tiny" --dataset helpdesk_alpaca_zh --template qwen \
  --output-dir "$W/kebab" --per-device-train-batch-size 2 >"$W/plan" 2>"$W/log" || fail "--kebab-case keys"
grep -q "steps:" "$W/plan" || fail "--kebab-case dry-run printed no plan"
"$PDSD" train --dry-run --dry_run --model_name_or_path "$W/tiny" --dataset helpdesk_alpaca_zh --output_dir "$W/snake" >/dev/null 2>&1 ||
  fail "--dry_run spelling"

# 5. a hub id with no local folder: exit 1 and a way forward
(cd "$W" && "$PDSD" train "$SRC/configs/sft_qwen2.5_0.5b_lora.yaml" --dataset_dir "$SRC/data" --dry-run) >"$W/out" 2>"$W/log"; rc=$?
[[ $rc == 1 ]] || fail "hub id: exit $rc"
grep -q "looks like a model hub id" "$W/log" && grep -q "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" "$W/log" &&
  grep -q "models/Qwen2.5-0.5B-Instruct" "$W/log" || fail "hub id message"
mkdir -p "$W/models" && cp -r "$W/tiny" "$W/models/Qwen2.5-0.5B-Instruct"
(cd "$W" && "$PDSD" train "$SRC/configs/sft_qwen2.5_0.5b_lora.yaml" --dataset_dir "$SRC/data" --output_dir "$W/hub" --dry-run) \
  >"$W/out" 2>"$W/log" || fail "hub id resolved under models/"

# 6. invalid values: exit 1 naming the key
for bad in "--save_steps 0" "--logging_steps -1" "--num_train_epochs -1" "--learning_rate -1e-4" "--val_size -0.1" \
           "--eval_strategy sometimes" "--mix_strategy shuffle"; do
  # shellcheck disable=SC2086
  "$PDSD" train --dry-run --model_name_or_path "$W/tiny" --dataset helpdesk_alpaca_zh --output_dir "$W/bad" $bad >/dev/null 2>"$W/log"
  rc=$?
  key=${bad%% *}; key=${key#--}
  [[ $rc == 1 ]] && grep -q "$key" "$W/log" || fail "invalid '$bad': exit $rc"
done
echo "document command lines: ok"
