#!/usr/bin/env bash
# Builds pdsd (scripts/setup.sh) and runs the whole test suite with ctest.
#   scripts/test.sh [ctest args...]     e.g. scripts/test.sh -L unit
# Ends with ctest's summary line and a plain "N passed, N failed, N skipped" line.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
log=$(mktemp)
(cd build && ctest --output-on-failure -j "${PDSD_TEST_JOBS:-2}" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1)
total=$(sed -nE 's/.* out of ([0-9]+).*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.* ([0-9]+) tests failed.*/\1/p' <<<"$summary")
skipped=$(grep -cE '\*\*\*Skipped|Not Run|Disabled' "$log" || true)
echo
echo "$summary"
echo "ctest: $(( ${total:-0} - ${failed:-0} - skipped )) passed, ${failed:-0} failed, $skipped skipped"
rm -f "$log"
exit "$rc"
