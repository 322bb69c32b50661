#!/bin/sh
# ctest `oracle_lf_qwen_template`: re-run the LLaMA-Factory dump and compare with the committed
# golden.   run_lf_oracle.sh [ROOT] [PYTHON]
# PYTHON: $PDSD_LF_PYTHON, else the argument (CMake's PDSD_LF_PYTHON), else ROOT/.venv-lf/bin/python
# (made by scripts/setup_oracles.sh lf). Exit 77 (skip) when it has no llamafactory, or 1
# instead when PDSD_ORACLES_REQUIRED names lf (CI: the oracle must run; scripts/oracle/skip.sh).
root="${1:-$(dirname "$0")/../..}"
py="${PDSD_LF_PYTHON:-${2:-$root/.venv-lf/bin/python}}"
if [ ! -x "$py" ] || ! DISABLE_VERSION_CHECK=1 "$py" -c "import llamafactory" >/dev/null 2>&1; then
  exec "$root/scripts/oracle/skip.sh" lf "no python with llamafactory at $py (make it:" \
       "scripts/setup_oracles.sh lf; see build/setup-oracles/lf.log if that failed)"
fi
exec "$py" "$root/scripts/oracle/lf_template_dump.py" --data "$root/data" \
  --tokenizer "${PDSD_FIXTURES:-$root/tests/fixtures}/qwen-tokenizer" \
  --check "$root/tests/data/golden/lf_qwen_template.json"
