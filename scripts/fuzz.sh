#!/usr/bin/env bash
# Fuzz the safetensors header parser with libFuzzer + ASan/UBSan for a bounded time.
#   scripts/fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
# Needs clang (Debian: clang, libclang-rt-dev). Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
BUILD=${2:-build-fuzz}
TORCH_PREFIX=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPDSD_FUZZ=ON -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" >/dev/null 2>&1
cmake --build "$BUILD" --target fuzz_safetensors >/dev/null
CORPUS="$BUILD/fuzz-corpus"
mkdir -p "$CORPUS"
cp -n tests/fixtures/golden/tiny-bert.reference.safetensors "$CORPUS/" 2>/dev/null || true
mkdir -p "$BUILD/artifacts"   # crash inputs land here, never in the source tree
"$BUILD/tests/fuzz_safetensors" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$BUILD/artifacts/" \
  "$CORPUS" 2>&1 | tail -n 40   # a crash report (stack, artifact path) fits in this
echo "fuzz_safetensors: ${SECONDS_TO_RUN}s, no crash"
