#!/usr/bin/env bash
# Packs what one run on the lent GPU machine needs into .gpu/ (ignored by git, sent with the
# device tool's `carry`): build/pdsd and the GPU test built here against the same PyTorch
# wheel as the machine's (2.11.0+cu130), the Debian libraries they link that the machine's
# image lacks (xz), and the fixtures the tests and benchmarks read. bench/gpu_run.sh unpacks it
# there. Building on the GPU machine would spend its scarce minutes compiling.
#   bench/gpu_bundle.sh            (after cmake --build build --target pdsd test_model_gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/lib .gpu/fixtures/golden
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
bins="build/pdsd build/tests/test_model_gpu"
strip -o .gpu/pdsd build/pdsd
strip -o .gpu/test_model_gpu build/tests/test_model_gpu
# Every resolved library except libtorch/CUDA (the machine's wheel provides them) and the C
# and C++ runtimes (the machine's newer glibc and libstdc++ serve binaries built here).
ldd $bins | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/torch/lib/|/nvidia/|/(libc|libm|libdl|librt|libpthread|libutil|libstdc\+\+|libgcc_s)\.so' |
  while read -r lib; do cp -L "$lib" .gpu/lib/; done
tar -C .gpu/lib -cJf .gpu/libs.tar.xz . && rm -rf .gpu/lib
fx=${PDSD_FIXTURES:-tests/fixtures}
cp -r "$fx/golden/tiny-qwen2" "$fx/golden/tiny-qwen2.reference.safetensors" .gpu/fixtures/golden/
cp -r "$fx/qwen-tokenizer" .gpu/fixtures/
du -sh .gpu/*
