#!/usr/bin/env bash
# Everything measured on the lent GPU machine, in one call (its minutes are few):
#   device run: bash bench/gpu_run.sh      with carry [".gpu"] (made by bench/gpu_bundle.sh)
# GPU tests, then bench/gpu_bench.sh (generation) and bench/train_gpu_bench.sh (LoRA SFT) at
# 4 x 1024 and 4 x 4096. Logs go to $OUT; the tables come last in the output.
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
export PDSD=/tmp/pdsd-bin/pdsd PDSD_FIXTURES=$B/fixtures PYTHON=python3 MODEL=/tmp/qwen05 PEER_LOG_DIR=$OUT
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
