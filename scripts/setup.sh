#!/usr/bin/env bash
# Sets up pdsd on a fresh Debian 12 machine and builds it (Release) into build/.
# Idempotent and non-interactive: apt packages, a project virtualenv (.venv) with a
# pinned torch wheel (its libtorch is what pdsd links), then CMake + ninja.
#   PDSD_SKIP_APT=1   skip apt (packages already there, or no root)
#   LIBTORCH_DIR=...  build against a libtorch archive instead of the wheel
#   PDSD_TEST_VENV=1  also install the oracle packages (transformers, peft, tokenizers...)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_VERSION=2.11.0   # the GPU reference machine runs 2.11; keep them equal

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(cmake g++ ninja-build pkg-config ccache git python3-venv
  libfaiss-dev libopenblas0-openmp nlohmann-json3-dev libcli11-dev libspdlog-dev
  libsqlite3-dev libcpp-httplib-dev libyaml-cpp-dev libutf8proc-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpoppler-cpp-dev
  libcairo2-dev fonts-dejavu-core libzip-dev libxml2-dev libsentencepiece-dev libedit-dev
  libpq-dev)   # libpq: the PostgreSQL knowledge-base store (vs_type pg); optional, compiled out without it
# Test-only: the web page is checked in headless Chromium (scripts/oracle/web_page_test.py).
[[ "${PDSD_TEST_VENV:-0}" == 1 ]] && APT_PACKAGES+=(chromium chromium-driver fonts-noto-cjk)

if [[ "${PDSD_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing apt packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [[ -z "${LIBTORCH_DIR:-}" ]]; then
  if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    "$PY" -m venv .venv
  fi
  if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    log "installing torch==$TORCH_VERSION into .venv (large download, once)"
    .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" numpy
  fi
  TORCH_PREFIX=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')
else
  TORCH_PREFIX=$LIBTORCH_DIR
fi

if [[ "${PDSD_TEST_VENV:-0}" == 1 ]]; then
  log "installing oracle packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements-oracle.txt
fi

log "configuring build/ (torch from $TORCH_PREFIX)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  ${PDSD_CMAKE_ARGS:-} >/dev/null
log "building (2 cores: the first build takes several minutes; ccache makes later ones fast)"
cmake --build build -j "${PDSD_JOBS:-$(nproc)}"
log "done: $ROOT/build/pdsd"
