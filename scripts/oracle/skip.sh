#!/bin/sh
# skip.sh VENV WHY...: the shell side of oracle_required.py. Prints the reason, then exits 77
# (ctest SKIP), or 1 when PDSD_ORACLES_REQUIRED names VENV ("1"/"all": every venv).
venv=$1; shift
echo "SKIP: $*"
want=",$(echo "${PDSD_ORACLES_REQUIRED:-}" | tr ' ' ','),"
case $want in
  *",1,"*|*",all,"*|*",$venv,"*)
    echo "FAIL: PDSD_ORACLES_REQUIRED=$PDSD_ORACLES_REQUIRED names $venv: this oracle must run"; exit 1 ;;
esac
exit 77
