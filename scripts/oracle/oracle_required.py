"""One rule for every oracle: skip (exit 77) when its venv is missing, unless
PDSD_ORACLES_REQUIRED names that venv ("1"/"all": every one; else e.g. "lf,chatchat"),
then fail (exit 1). CI requires the venvs it makes (.ci/run)."""
import os
import sys


def required(venv):
    want = os.environ.get("PDSD_ORACLES_REQUIRED", "").replace(" ", ",").split(",")
    return "1" in want or "all" in want or venv in want


def skip(venv, why):
    print(f"SKIP: {why}", file=sys.stderr)
    if required(venv):
        print(f"FAIL: PDSD_ORACLES_REQUIRED={os.environ['PDSD_ORACLES_REQUIRED']} names {venv}: "
              "this oracle must run", file=sys.stderr)
        sys.exit(1)
    sys.exit(77)
