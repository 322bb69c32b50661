#!/usr/bin/env bash
# Export benchmark: merge a LoRA (r=8, q_proj+v_proj) into a random-weight Qwen2.5-0.5B
# (BF16) with `pdsd export` and with PEFT merge_and_unload + save_pretrained, same inputs,
# same run. Prints wall time and peak RSS (/usr/bin/time -v) of each, and the ratio.
#   bench/export_bench.sh [WORK_DIR]      (default /tmp/pdsd-export-bench; inputs are cached)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PDSD=${PDSD:-$ROOT/build/pdsd}
WORK=${1:-/tmp/pdsd-export-bench}
mkdir -p "$WORK"
"$PY" "$ROOT/bench/export_make_inputs.py" "$WORK" >&2

measure() {  # name, command...: prints "name wall_s cpu_s peak_rss_mb"
    local name=$1; shift
    rm -rf "$WORK/out-$name"
    sync
    /usr/bin/time -v "$@" > "$WORK/$name.stdout" 2> "$WORK/$name.time" || { cat "$WORK/$name.time" >&2; exit 1; }
    local wall rss cpu
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/$name.time")
    cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {printf "%.2f", s}' "$WORK/$name.time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$WORK/$name.time")
    echo "$name $wall $cpu $rss"
}

P1=$(measure pdsd "$PDSD" export --model_name_or_path "$WORK/base" --adapter_name_or_path "$WORK/adapter" \
      --template qwen --finetuning_type lora --export_dir "$WORK/out-pdsd")
P2=$(measure pdsd_noverify "$PDSD" export --model_name_or_path "$WORK/base" --adapter_name_or_path "$WORK/adapter" \
      --template qwen --finetuning_type lora --export_dir "$WORK/out-pdsd_noverify" --no_verify)
P3=$(measure peft "$PY" "$ROOT/bench/export_peft.py" "$WORK/base" "$WORK/adapter" "$WORK/out-peft")
grep "self-check" "$WORK/pdsd.stdout" || true
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F)"
printf "%-28s %10s %10s %14s\n" tool wall_s cpu_s peak_rss_MB
for r in "$P1" "$P2" "$P3"; do set -- $r; printf "%-28s %10s %10s %14s\n" "$1" "$2" "$3" "$4"; done
set -- $P1; pw=$2; pc=$3; set -- $P3; qw=$2; qc=$3
awk -v a="$pw" -v b="$qw" -v c="$pc" -v d="$qc" 'BEGIN { printf "pdsd (with self-check) vs PEFT: %.1fx faster wall, %.1fx less CPU\n", b / a, d / c }'
# Same bits? PEFT merged in BF16 here (as LLaMA-Factory loads a BF16 model), pdsd in FP32,
# so a few weights may differ by one BF16 ulp; report how many.
"$PY" - "$WORK/out-pdsd" "$WORK/out-peft" <<'PYEOF'
import sys, glob, torch
from safetensors.torch import load_file
def load(d):
    sd = {}
    for f in sorted(glob.glob(d + "/*.safetensors")): sd.update(load_file(f))
    return sd
a, b = load(sys.argv[1]), load(sys.argv[2])
keys = sorted(set(a) & set(b))
diff = [k for k in keys if not torch.equal(a[k], b[k])]
ne = sum(int((a[k] != b[k]).sum()) for k in diff)
tot = sum(a[k].numel() for k in keys)
print(f"tensors compared: {len(keys)} (pdsd {len(a)}, peft {len(b)}); differing tensors: {len(diff)}; "
      f"differing elements: {ne} of {tot}")
PYEOF
