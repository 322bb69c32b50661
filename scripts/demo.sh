#!/usr/bin/env bash
# The main job on a fresh machine: set up + build, then show what pdsd can do.
# (Later stages extend this to init -> kb -r -> chat -q on the bundled samples.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/pdsd --help
build/pdsd env
