#!/usr/bin/env bash
# Layering lint (run as a ctest):
#  1. a module includes only its own and lower modules' headers:
#       core < data < tokenizer < model < lora < train < export < kb < rag < chat < serve
#     (src/cli may include anything; nothing includes cli);
#  2. a file that includes libtorch (torch/, ATen/, c10/) must not include spdlog or fmt:
#     the wheel bundles its own {fmt}, which shadows Debian's fmt 9 used by spdlog.
set -uo pipefail
cd "$(dirname "$0")/.."
levels=(core data tokenizer model lora train export kb rag chat serve)
level_of() { local i; for i in "${!levels[@]}"; do [[ ${levels[$i]} == "$1" ]] && { echo "$i"; return; }; done; echo -1; }
fail=0
for f in $(find include/pdsd src -name '*.h' -o -name '*.cpp' | sort); do
  mod=$(sed -nE 's#^(include/pdsd|src)/([a-z_]+)/.*#\2#p' <<<"$f")
  [[ -z $mod || $mod == cli ]] && continue
  me=$(level_of "$mod")
  [[ $me -lt 0 ]] && { echo "$f: module '$mod' has no level in scripts/check_layers.sh"; fail=1; continue; }
  while IFS= read -r inc; do
    dep=$(sed -nE 's#.*"pdsd/([a-z_]+)/.*#\1#p' <<<"$inc")
    [[ -z $dep || $dep == "$mod" ]] && continue
    lvl=$(level_of "$dep")
    if [[ $lvl -ge $me ]]; then echo "$f: $mod (level $me) includes $dep (level $lvl): $inc"; fail=1; fi
  done < <(grep -E '^#include "pdsd/' "$f")
  if grep -qE '^#include <(torch|ATen|c10)/' "$f" && grep -qE '^#include <(spdlog|fmt)/' "$f"; then
    echo "$f: includes libtorch and spdlog/fmt together (use pdsd/core/log.h)"; fail=1
  fi
done
[[ $fail == 0 ]] && echo "layering ok"
exit $fail
