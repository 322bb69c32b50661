#!/usr/bin/env bash
# SFT throughput and peak memory by finetuning method: pdsd train vs the Hugging Face loop a
# LLaMA-Factory user gets for the same method (bench/hf_train_peer.py: transformers, PEFT,
# bitsandbytes where installed), same synthetic data and shapes (Qwen2.5-0.5B shape, random
# weights, bf16, AdamW, batch BS x SEQ, every token trained), with gradient checkpointing on
# and/or off. Per run: tokens/s, peak memory, pdsd's --dry-run estimate; the ratios and one
# summary table at the end.
#   bench/train_gpu_bench.sh [STEPS] [SEQ]      (run from the repository root, build/pdsd built)
# Environment knobs (defaults: the original LoRA benchmark):
#   METHODS="lora"    any of: lora full freeze qlora4 qlora8. lora: r 8 / alpha 16 on
#                     q_proj,v_proj; freeze: the last FREEZE_LAYERS decoder layers; qlora4: that
#                     LoRA on an NF4 base with double quantization; qlora8: on an int8 base
#   GCS="on off"      gradient checkpointing settings (on: LLaMA-Factory's default)
#   DEVICE=cuda       cpu: a smoke test of the whole script (fp32; peak = the process's RSS)
#   PRESET=qwen2.5-0.5b   tiny: `model init --preset tiny` (2 layers, hidden 64, real vocabulary)
#   BS=4  FREEZE_LAYERS=2 (LF's default; 1 with PRESET=tiny)  LOG_DIR (keeps every run's log)
# CPU smoke test (about 4 minutes on a busy 2-core VM; its output: docs/benchmarks.md):
#   DEVICE=cpu PRESET=tiny BS=2 METHODS="lora full freeze qlora4 qlora8" bench/train_gpu_bench.sh 10 64
# Peak memory on CUDA: pdsd's own `peak CUDA memory allocated` log line (the caching allocator's
# peak) and torch.cuda.max_memory_allocated for HF. Exit 1 when any pdsd run failed (the other
# runs still go on); a peer that cannot run here (no bitsandbytes) prints why and is skipped.
# Peer numbers measured on the reference H200: docs/benchmarks.md.
set -euo pipefail
STEPS=${1:-30}; SEQ=${2:-1024}; BS=${BS:-4}
METHODS=${METHODS:-lora}; GCS=${GCS:-on off}; DEVICE=${DEVICE:-cuda}; PRESET=${PRESET:-qwen2.5-0.5b}
FREEZE_LAYERS=${FREEZE_LAYERS:-$([[ $PRESET == tiny ]] && echo 1 || echo 2)}
ROOT=$(cd "$(dirname "$0")/.." && pwd); PDSD=${PDSD:-$ROOT/build/pdsd}
FIX=${PDSD_FIXTURES:-$ROOT/tests/fixtures}
PY=${PYTHON:-python3}
(( STEPS >= 6 )) || { echo "STEPS $STEPS: expected at least 6 (tokens/s is taken after the 5th step)"; exit 1; }
(( SEQ >= 48 )) || { echo "SEQ $SEQ: expected at least 48 (the synthetic responses are SEQ - 40 characters)"; exit 1; }
for m in $METHODS; do
  [[ " lora full freeze qlora4 qlora8 " == *" $m "* ]] || {
    echo "METHODS: unknown method '$m' (expected any of: lora full freeze qlora4 qlora8)"; exit 1; }
done
for gc in $GCS; do
  [[ $gc == on || $gc == off ]] || { echo "GCS: unknown setting '$gc' (expected on and/or off)"; exit 1; }
done
[[ $DEVICE == cuda || $DEVICE == cpu ]] || { echo "DEVICE $DEVICE: expected cuda or cpu"; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
LOG=${LOG_DIR:-$W}; mkdir -p "$LOG"
"$PDSD" model init --preset "$PRESET" --tokenizer "$FIX/qwen-tokenizer" --out "$W/model" >/dev/null 2>"$LOG/model_init.log"

# Synthetic alpaca data: responses of random CJK characters (about one token each) so that an
# example is ~SEQ tokens, nearly all of them trained (short prompt).
"$PY" - "$W/data" "$SEQ" "$((STEPS * BS + 8))" <<'PYEOF'
import json, os, random, sys
out, seq, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
rows = [{"instruction": "复述", "input": "", "output": "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(seq - 40))}
        for _ in range(n)]
json.dump(rows, open(os.path.join(out, "synth.json"), "w"), ensure_ascii=False)
json.dump({"synth": {"file_name": "synth.json"}}, open(os.path.join(out, "dataset_info.json"), "w"))
PYEOF

# LLaMA-Factory keys of one method (the lines added to the common config below).
method_yaml() {
  local lora="finetuning_type: lora"$'\n'"lora_target: q_proj,v_proj"$'\n'"lora_rank: 8"$'\n'"lora_alpha: 16"
  case $1 in
    lora) echo "$lora" ;;
    full) echo "finetuning_type: full" ;;
    freeze) printf 'finetuning_type: freeze\nfreeze_trainable_layers: %s\n' "$FREEZE_LAYERS" ;;
    qlora4) printf '%s\nquantization_bit: 4\nquantization_type: nf4\ndouble_quantization: true\n' "$lora" ;;
    qlora8) printf '%s\nquantization_bit: 8\n' "$lora" ;;
  esac
}
write_cfg() {  # method -> $W/cfg_<method>.yaml
  { method_yaml "$1"; cat <<YAML
model_name_or_path: $W/model
device: $DEVICE
stage: sft
dataset: synth
dataset_dir: $W/data
template: qwen
cutoff_len: $SEQ
output_dir: $W/out
per_device_train_batch_size: $BS
gradient_accumulation_steps: 1
learning_rate: 1.0e-4
weight_decay: 0.1
max_grad_norm: 1.0
max_steps: $STEPS
logging_steps: 1
save_steps: 100000
bf16: true
YAML
  } >"$W/cfg_$1.yaml"
}
# steady state: tokens and time between the 5th and the last log line. elapsed_time has whole
# seconds only; throughput = tokens / seconds since the start, so the seconds come from it.
tps_of() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
a, b = rows[4], rows[-1]
ta, tb = a["total_tokens"] / a["throughput"], b["total_tokens"] / b["throughput"]
print(round((b["total_tokens"] - a["total_tokens"]) / (tb - ta)))
PYEOF
}
# Runs a command; on CPU writes its peak RSS in GiB (ru_maxrss of the child, KiB) to file $1.
with_rss() {
  local f=$1; shift
  "$PY" -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write("%.3f\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20))
sys.exit(rc)' "$f" "$@"
}
KIND=$([[ $DEVICE == cpu ]] && echo rss || echo cuda)

# One pdsd run: prints "TOKENS_PER_S PEAK_GIB ESTIMATE_GIB TRAINABLE ok|failed" (n/a where
# missing); its log in $LOG.
pdsd_run() {
  local m=$1 gc=$2 disable plan est trainable peak tps log="$LOG/pdsd_${m}_${SEQ}_$2.log"
  disable=$([[ $gc == on ]] && echo false || echo true)
  plan=$("$PDSD" train "$W/cfg_$m.yaml" --disable_gradient_checkpointing $disable --dry-run 2>/dev/null) || true
  est=$(sed -n 's/^peak memory estimate: \([0-9.e+-]*\) GiB$/\1/p' <<<"$plan")
  trainable=$(sed -n 's/^trainable params: \([0-9]*\) of .*/\1/p' <<<"$plan")
  est=${est:-n/a}; trainable=${trainable:-n/a}
  rm -rf "$W/out" "$W/rss"
  if ! with_rss "$W/rss" "$PDSD" train "$W/cfg_$m.yaml" --disable_gradient_checkpointing $disable 2>"$log" >/dev/null; then
    echo "pdsd train $m failed, checkpointing $gc (log $log):" >&2; tail -5 "$log" >&2
    echo "n/a n/a $est $trainable failed"; return
  fi
  tps=$(tps_of "$W/out/trainer_log.jsonl" || echo n/a)
  if [[ $KIND == rss ]]; then peak=$(cat "$W/rss" || echo n/a)
  else peak=$(sed -n 's/.*peak CUDA memory allocated: \([0-9.e+-]*\) GiB.*/\1/p' "$log"); fi
  echo "$tps ${peak:-n/a} $est $trainable ok"
}

failed=0
: >"$W/results.tsv"
for m in $METHODS; do
  write_cfg "$m"
  for gc in $GCS; do
    read -r p_tps p_mem est p_train status < <(pdsd_run "$m" "$gc")
    [[ $status == ok ]] || failed=1
    echo "pdsd train $m, checkpointing $gc: $p_tps tokens/s, peak $p_mem GiB $KIND" \
         "(dry-run estimate $est GiB, $p_train trainable) (batch $BS x $SEQ, $STEPS steps, $DEVICE)"
    # Peer: same shapes and token count per step; see bench/hf_train_peer.py for what it sets.
    peer=$("$PY" "$ROOT/bench/hf_train_peer.py" "$W/model" --method "$m" --seq "$SEQ" --steps "$STEPS" --batch "$BS" \
           --gc "$gc" --device "$DEVICE" --freeze-layers "$FREEZE_LAYERS" 2>"$LOG/hf_${m}_${SEQ}_$gc.log" | tail -1) || true
    if [[ $peer == n/a* || -z $peer ]]; then
      reason=${peer#n/a }; [[ -n $peer ]] || reason="no output, see $LOG/hf_${m}_${SEQ}_$gc.log"
      echo "HF peer $m, checkpointing $gc: not run: $reason"
      h_tps=n/a; h_mem=n/a
    else
      read -r h_tps h_mem _ h_train <<<"$peer"
      echo "HF peer $m, checkpointing $gc: $h_tps tokens/s, peak $h_mem GiB $KIND ($h_train trainable)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$gc" "$p_tps" "$p_mem" "$est" "$h_tps" "$h_mem" >>"$W/results.tsv"
  done
done

# Summary: ratios are pdsd / HF (tokens/s: higher is better for pdsd; memory: lower is).
"$PY" - "$W/results.tsv" "$KIND" "$BS x $SEQ, $STEPS steps, $DEVICE, $PRESET" <<'PYEOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
kind, shape = sys.argv[2], sys.argv[3]
num = lambda s: None if s == "n/a" else float(s)
def ratio(a, b):
    a, b = num(a), num(b)
    return "n/a" if a is None or not b else "%.2f" % (a / b)
mem = "peak CUDA GiB" if kind == "cuda" else "peak RSS GiB"
print(f"\nsummary ({shape}; memory: {mem})")
head = ["method", "GC", "pdsd tok/s", "HF tok/s", "pdsd/HF", "pdsd mem", "HF mem", "pdsd/HF", "estimate", "est/pdsd"]
table = [head] + [[m, gc, pt, ht, ratio(pt, ht), pm, hm, ratio(pm, hm), est, ratio(est, pm)]
                  for m, gc, pt, pm, est, ht, hm in rows]
w = [max(len(r[i]) for r in table) for i in range(len(head))]
for r in table:
    print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))
by = {(r[0], r[1]): r for r in rows}
for m in dict.fromkeys(r[0] for r in rows):  # pdsd without checkpointing against HF with it
    off, on = by.get((m, "off")), by.get((m, "on"))
    if off and on and "n/a" not in (ratio(off[2], on[5]), ratio(off[3], on[6])):
        print(f"{m}: pdsd without checkpointing vs HF with it: {ratio(off[2], on[5])} tokens/s at {ratio(off[3], on[6])} memory")
PYEOF
exit $failed
