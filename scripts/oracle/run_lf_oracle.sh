#!/bin/sh
# ctest `oracle_lf_qwen_template`: re-run the LLaMA-Factory dump and compare with the committed
# golden. Exit 77 (skip) when no LLaMA-Factory python is available.
root="${1:-$(dirname "$0")/../..}"
py="${PDSD_LF_PYTHON:-/work/venvs/lf/bin/python}"
if [ ! -x "$py" ] || ! "$py" -c "import llamafactory" >/dev/null 2>&1; then
  echo "skip: no python with llamafactory (set PDSD_LF_PYTHON or create /work/venvs/lf)"
  exit 77
fi
exec "$py" "$root/scripts/oracle/lf_template_dump.py" --data "$root/data" \
  --tokenizer "${PDSD_FIXTURES:-$root/tests/fixtures}/qwen-tokenizer" \
  --check "$root/tests/data/golden/lf_qwen_template.json"
