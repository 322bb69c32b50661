#!/usr/bin/env bash
# Everything measured on the lent GPU machine, in one call (its minutes are few):
#   device run: bash bench/gpu_run.sh      with carry [".gpu"] (made by bench/gpu_bundle.sh)
# GPU tests, then bench/gpu_bench.sh (generation), bench/train_gpu_bench.sh (LoRA SFT) at
# 4 x 1024 and 4 x 4096, then the same script over every finetuning method (lora full freeze
# qlora4 qlora8, checkpointing on, 4 x 1024). Logs go to $OUT; the tables come last in the output.
# Time budget: one device command may run 10 minutes. The parts before the methods were planned
# at about 5 minutes; the methods part is 5 methods x (dry run + pdsd run + HF run) of
# TRAIN_METHOD_STEPS (10) steps, about 2-3 minutes (estimated: not yet run on a GPU), and it is
# skipped, saying so, when the earlier parts already took more than METHODS_START_BY_S (400 s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pdsd-gpu-out}; mkdir -p "$OUT"
B=$PWD/.gpu
mkdir -p /tmp/pdsdlib && tar -C /tmp/pdsdlib -xJf "$B/libs.tar.xz"
TL=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
# The bundled Debian libraries only for pdsd's own binaries: in a global LD_LIBRARY_PATH their
# older libexpat/libssl/libz would shadow the ones the machine's Python modules need.
mkdir -p /tmp/pdsd-bin
for exe in pdsd test_model_gpu; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s:/tmp/pdsdlib exec %s/%s "$@"\n' "$TL" "$B" "$exe" >/tmp/pdsd-bin/$exe
  chmod +x /tmp/pdsd-bin/$exe
done
export PDSD=/tmp/pdsd-bin/pdsd PDSD_FIXTURES=$B/fixtures PYTHON=python3 MODEL=/tmp/qwen05 LOG_DIR=$OUT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
LD_LIBRARY_PATH=$TL:/tmp/pdsdlib ldd "$B/pdsd" | grep "not found" && { echo "missing libraries"; exit 1; }
t0=$SECONDS
/tmp/pdsd-bin/test_model_gpu --gtest_color=no 2>&1 | tee "$OUT/test_gpu.log" | grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) " 
echo "tests: $((SECONDS - t0)) s"
bash bench/gpu_bench.sh cuda 2>&1 | tee "$OUT/gen_bench.log" | grep -v '^{'
echo "generation bench: $((SECONDS - t0)) s"
for seq in ${TRAIN_SEQS:-1024 4096}; do
  bash bench/train_gpu_bench.sh "${TRAIN_STEPS:-12}" "$seq" 2>&1 | tee "$OUT/train_$seq.log"
  echo "train bench $seq: $((SECONDS - t0)) s"
done
if (( SECONDS - t0 <= ${METHODS_START_BY_S:-400} )); then
  LOG_DIR=$OUT/train_methods METHODS=${TRAIN_METHODS:-lora full freeze qlora4 qlora8} GCS=on \
    bash bench/train_gpu_bench.sh "${TRAIN_METHOD_STEPS:-10}" 1024 2>&1 | tee "$OUT/train_methods.log"
  echo "train methods bench: $((SECONDS - t0)) s"
else
  echo "train methods bench skipped: $((SECONDS - t0)) s already spent (METHODS_START_BY_S ${METHODS_START_BY_S:-400})"
fi
