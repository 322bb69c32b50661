#!/usr/bin/env bash
# Fuzz with libFuzzer + ASan/UBSan for a bounded time: the safetensors header parser, then
# the loaders (JSON + dataset records, docx XML, HTML, CSV, kb json/jsonl), SECONDS each.
#   scripts/fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz] [TARGETS="fuzz_safetensors fuzz_loaders"]
# Needs clang (Debian: clang, libclang-rt-dev). Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
BUILD=${2:-build-fuzz}
TARGETS=${3:-fuzz_safetensors fuzz_loaders}
TORCH_PREFIX=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPDSD_FUZZ=ON -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" >/dev/null 2>&1
mkdir -p "$BUILD/artifacts"   # crash inputs land here, never in the source tree
for target in $TARGETS; do
  cmake --build "$BUILD" --target "$target" >/dev/null
  CORPUS="$BUILD/fuzz-corpus/$target"
  mkdir -p "$CORPUS"
  case $target in
    fuzz_safetensors) cp -n tests/fixtures/golden/tiny-bert.reference.safetensors "$CORPUS/" 2>/dev/null || true ;;
    fuzz_loaders)   # one small seed per reader (first byte selects it)
      printf '\000{"instruction": "a", "output": "b"}' >"$CORPUS/json"
      printf '\001<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>a</w:t></w:r></w:p></w:body></w:document>' >"$CORPUS/docx"
      printf '\002<p>a &amp; b<script>x</script></p>' >"$CORPUS/html"
      printf '\003a,b\n1,"2"\n' >"$CORPUS/csv" ;;
  esac
  # -rss_limit_mb / -timeout: a memory or time bomb is a finding too.
  "$BUILD/tests/$target" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/" \
    "$CORPUS" 2>&1 | tail -n 40   # a crash report (stack, artifact path) fits in this
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "$target: crash (see $BUILD/artifacts/)"; exit 1; }
  echo "$target: ${SECONDS_TO_RUN}s, no crash"
done
