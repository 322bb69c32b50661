#!/usr/bin/env bash
# Export benchmark: merge a LoRA (r=8, q_proj+v_proj) into a random-weight Qwen2.5-0.5B
# (BF16) with `pdsd export` and with PEFT merge_and_unload + save_pretrained, same inputs,
# same run. Prints wall time and peak RSS (/usr/bin/time -v) of each, and the ratio.
#   bench/export_bench.sh [WORK_DIR]      (default /tmp/pdsd-export-bench; inputs are cached)
# GGUF rows (docs/benchmarks.md "GGUF export"): GGUF_TYPES="bf16 q8_0 q4_k_m ..." also exports
# a random Qwen2.5-0.5B with the real tokenizer (`pdsd model init`, no adapter) once per type
# and prints GGUF bytes, the GGUF writer's seconds, wall, CPU, peak RSS and the per-type tensor
# counts; GGUF_ONLY=1 skips the merge comparison above.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PDSD=${PDSD:-$ROOT/build/pdsd}
WORK=${1:-/tmp/pdsd-export-bench}
mkdir -p "$WORK"

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

gguf_rows() {
    local base="$WORK/gguf-base"
    [[ -f $base/model.safetensors ]] || "$PDSD" --log-level warn model init --preset qwen2.5-0.5b --out "$base" \
        --seed 0 --tokenizer "$ROOT/tests/fixtures/qwen-tokenizer" >&2
    echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M UTC')"
    printf "%-8s %14s %10s %8s %8s %8s  %s\n" type gguf_bytes gguf_s wall_s cpu_s rss_MB tensors
    for t in $GGUF_TYPES; do
        local r
        r=$(measure "gguf-$t" "$PDSD" export --model_name_or_path "$base" --template qwen --finetuning_type lora \
            --export_dir "$WORK/out-gguf-$t" --export_format gguf --gguf_type "$t")
        set -- $r
        # the writer's line: "... 290 tensors (q4_k_m: 121 F32, 12 Q4_K, ...; N row-length fallbacks), ... bytes in S s"
        local line bytes secs mix
        line=$(grep "\[gguf\] wrote" "$WORK/gguf-$t.time")
        bytes=$(stat -c %s "$WORK/out-gguf-$t/model-$t.gguf")
        secs=$(sed -E 's/.* bytes in ([0-9.]+) s.*/\1/' <<<"$line")
        mix=$(sed -E 's/.*tensors \([^:]+: ([^;]*);.*/\1/' <<<"$line")
        printf "%-8s %14s %10.1f %8s %8s %8s  %s\n" "$t" "$bytes" "$secs" "$2" "$3" "$4" "$mix"
    done
}

if [[ ${GGUF_ONLY:-0} == 1 ]]; then
    gguf_rows
    exit 0
fi
"$PY" "$ROOT/bench/export_make_inputs.py" "$WORK" >&2

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
[[ -z ${GGUF_TYPES:-} ]] || gguf_rows
