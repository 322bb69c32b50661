#!/usr/bin/env bash
# A plain clone must pass its tests without the reference folder beside it: nothing in the
# build, the tests, scripts/ or bench/ may read ../shared (PDSD_FIXTURES is the override).
# Also checks that the vendored fixtures the default path points at are present.
set -u
root=${1:?usage: no_shared_dependency.sh REPO_ROOT}
cd "$root" || exit 2
hits=$(grep -rIn --exclude-dir=.git --exclude-dir='build*' --exclude-dir='.venv*' \
         -e '\.\./shared' -e '/work/shared' CMakeLists.txt cmake tests scripts bench .ci 2>/dev/null |
       grep -v '^tests/repo/no_shared_dependency.sh:')
if [[ -n "$hits" ]]; then
  echo "these lines read the reference folder outside the repository:"; echo "$hits"; exit 1
fi
for f in tests/fixtures/qwen-tokenizer/tokenizer.json tests/fixtures/golden/tiny-qwen2/model.safetensors \
         tests/fixtures/golden/tiny-qwen2-lora-step1/adapter_model.safetensors tests/fixtures/README.md; do
  [[ -s $f ]] || { echo "vendored fixture missing: $f"; exit 1; }
done
echo "no ../shared reads; vendored fixtures present"
