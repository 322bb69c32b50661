#!/usr/bin/env bash
# Makes the oracle virtualenvs beside .venv, so that the LLaMA-Factory, Chatchat and llama.cpp
# oracle tests (ctest -L oracle) run instead of skipping:
#   .venv-lf        scripts/requirements-lf.txt        torch & co. come from .venv (a .pth file)
#   .venv-chatchat  scripts/requirements-chatchat.txt
#   .venv-llama     scripts/requirements-llama.txt     llama.cpp compiled from the sdist, once
# Run it after scripts/setup.sh (.venv-lf needs .venv's torch); .ci/run does.
#   scripts/setup_oracles.sh [lf] [chatchat] [llama]      (no argument: all three)
# Idempotent: a venv whose stamp matches its requirements file (and, for .venv-lf, .venv's
# torch) is kept as it is; any other is made again from scratch. Every venv has a time limit
# (PDSD_ORACLE_TIMEOUT seconds, default 900 each, 1800 for the llama.cpp compile).
# Each step logs what it does and how long it took; pip's output goes to
# build/setup-oracles/NAME.log. A venv that cannot be made is removed, so its tests skip and
# name that log. PDSD_ORACLES_REQUIRED names the venvs that must exist (1 or all: every one;
# else a list such as "lf,chatchat"): when one of those fails the script exits 1.
# Caches: pip's (~/.cache/pip) for downloads, ~/.cache/pdsd for the llama-cpp-python wheel
# (PDSD_CACHE_DIR overrides), ccache for the llama.cpp objects when the wheel is gone.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
CACHE=${PDSD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pdsd}
LOGDIR=$ROOT/build/setup-oracles
PIP_INSTALL=(install --disable-pip-version-check --no-input --progress-bar off --no-deps)

log() { printf '[setup-oracles] %s\n' "$*" >&2; }
# required NAME: is .venv-NAME in PDSD_ORACLES_REQUIRED ("1"/"all" = every venv)?
required() {
  local want=",${PDSD_ORACLES_REQUIRED:-},"; want=${want// /,}
  [[ $want == ,1, || $want == ,all, || $want == *",$1,"* ]]
}

# What a venv was made from; a venv is rebuilt when this changes.
stamp_text() {
  "$PY" --version
  sha256sum "scripts/requirements-$1.txt" | cut -d' ' -f1
  if [[ $1 == lf ]]; then
    .venv/bin/python -c 'import importlib.metadata as m, sysconfig
print("torch", m.version("torch"), sysconfig.get_path("purelib"))'
  fi
}

# Runs in a child (under `timeout`): makes .venv-$1 from nothing; the stamp is written last.
build_one() {
  local name=$1 venv=$ROOT/.venv-$1
  set -e
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  case $name in
    lf) build_lf "$venv" ;;
    chatchat) build_chatchat "$venv" ;;
    llama) build_llama "$venv" ;;
  esac
  stamp_text "$name" >"$venv/.pdsd-stamp"
}

step() {  # step TEXT CMD...: runs CMD, logs TEXT and its duration
  local t0=$SECONDS
  log "  $1 ..."
  "${@:2}"
  log "  $1: done in $((SECONDS - t0)) s"
}

build_lf() {
  local venv=$1 main_site lf_site
  [[ -x .venv/bin/python ]] || { log "  no .venv: run scripts/setup.sh first"; return 1; }
  main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  lf_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # .venv's site-packages after .venv-lf's own: torch 2.11 (and numpy, jinja2...) are used
  # from there, while the versions pinned here (transformers 5.6.0...) shadow .venv's.
  echo "$main_site" >"$lf_site/pdsd_main_venv.pth"
  step "pip install -r scripts/requirements-lf.txt (torch from $main_site)" \
    "$venv/bin/pip" "${PIP_INSTALL[@]}" -r scripts/requirements-lf.txt
  step "import check" env DISABLE_VERSION_CHECK=1 "$venv/bin/python" -c '
import torch, transformers, tokenizers, llamafactory
from llamafactory.data.template import TEMPLATES
import sys
print("  llamafactory", llamafactory.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "torch", torch.__version__, torch.__file__, file=sys.stderr)'
}

build_chatchat() {
  local venv=$1
  step "pip install -r scripts/requirements-chatchat.txt" \
    "$venv/bin/pip" "${PIP_INSTALL[@]}" -r scripts/requirements-chatchat.txt
  step "import check" "$venv/bin/python" -c '
import importlib.metadata as m, sys, httpx, openai, langchain.text_splitter
print("  langchain-chatchat", m.version("langchain-chatchat"), "httpx", httpx.__version__,
      "openai", openai.__version__, file=sys.stderr)'
}

build_llama() {
  local venv=$1 version whl src
  version=$(sed -n 's/^llama-cpp-python==//p' scripts/requirements-llama.txt)
  step "pip install the rest of scripts/requirements-llama.txt" \
    "$venv/bin/pip" "${PIP_INSTALL[@]}" -r <(grep -v '^llama-cpp-python==' scripts/requirements-llama.txt)
  whl=$(ls "$CACHE"/wheels/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)
  if [[ -z $whl ]]; then
    # Built from a fixed folder (not pip's random temporary one), so ccache and the
    # incremental CMake build folder hit when the cached wheel is gone.
    src=$CACHE/src/llama_cpp_python-$version
    if [[ ! -f $src/pyproject.toml ]]; then
      step "download the llama-cpp-python $version sdist" "$venv/bin/pip" download -q \
        --disable-pip-version-check --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$CACHE/sdist"
      rm -rf "$src.tmp" && mkdir -p "$src.tmp"
      tar -xzf "$CACHE/sdist/llama_cpp_python-$version.tar.gz" -C "$src.tmp" --strip-components=1
      mv "$src.tmp" "$src"
    fi
    local launcher=""
    command -v ccache >/dev/null && launcher="-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
    # CPU only; GGML_NATIVE=OFF: AVX2/FMA/F16C, the same code on every x86-64 CI machine (no
    # AMX, whose Q8_0 kernels crash: see gguf_check.py). No llava/mtmd: the oracle is text-only.
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CCACHE=OFF $launcher -DLLAVA_BUILD=OFF -DGGML_CUDA=OFF -DGGML_BLAS=OFF"
    export CMAKE_BUILD_PARALLEL_LEVEL=${PDSD_JOBS:-$(nproc)}
    rm -rf "$CACHE/wheels.tmp"
    step "compile llama-cpp-python $version ($CMAKE_ARGS, -j$CMAKE_BUILD_PARALLEL_LEVEL)" \
      "$venv/bin/pip" wheel --disable-pip-version-check --no-deps --no-build-isolation \
      --config-settings=build-dir="$CACHE/build/llama_cpp_python-$version" -w "$CACHE/wheels.tmp" "$src"
    mkdir -p "$CACHE/wheels"
    mv "$CACHE"/wheels.tmp/*.whl "$CACHE/wheels/"
    whl=$(ls "$CACHE"/wheels/llama_cpp_python-"$version"-*.whl | head -1)
  else
    log "  cached wheel: $whl"
  fi
  step "pip install $(basename "$whl")" "$venv/bin/pip" "${PIP_INSTALL[@]}" "$whl"
  step "import check" "$venv/bin/python" -c '
import sys, llama_cpp, numpy
print("  llama-cpp-python", llama_cpp.__version__, "numpy", numpy.__version__, file=sys.stderr)'
}

timeout_for() {
  if [[ -n "${PDSD_ORACLE_TIMEOUT:-}" ]]; then echo "$PDSD_ORACLE_TIMEOUT"
  elif [[ $1 == llama ]]; then echo 1800
  else echo 900; fi
}

if [[ "${1:-}" == --build-one ]]; then  # internal: the child run under `timeout`
  build_one "$2"
  exit
fi

names=("$@")
((${#names[@]})) || names=(lf chatchat llama)
mkdir -p "$LOGDIR"
failed=()
t_all=$SECONDS
for name in "${names[@]}"; do
  case $name in lf|chatchat|llama) ;; *) log "unknown venv '$name' (expected lf, chatchat or llama)"; exit 1 ;; esac
  venv=.venv-$name logf=$LOGDIR/$name.log t0=$SECONDS
  if [[ -f $venv/.pdsd-stamp ]] && [[ "$(stamp_text "$name" 2>/dev/null)" == "$(cat "$venv/.pdsd-stamp")" ]]; then
    log "$venv: up to date (scripts/requirements-$name.txt unchanged)"
    continue
  fi
  limit=$(timeout_for "$name")
  log "$venv: making it (time limit $limit s, log $logf)"
  # The child's log lines go to the terminal and the log file; pip's output to the file only.
  timeout -k 30 "$limit" "$0" --build-one "$name" >"$logf" 2> >(tee -a "$logf" >&2)
  rc=$?
  wait  # for the tee above
  if ((rc == 0)); then
    log "$venv: ready in $((SECONDS - t0)) s"
  else
    ((rc == 124 || rc == 137)) && why="time limit of $limit s reached" || why="exit status $rc"
    log "$venv: FAILED after $((SECONDS - t0)) s ($why); last lines of $logf:"
    tail -n 15 "$logf" | sed 's/^/    /' >&2
    rm -rf "$venv"
    printf '%s\n' "$why" "see $logf" >"$LOGDIR/$name.failed"
    failed+=("$name")
    continue
  fi
  rm -f "$LOGDIR/$name.failed"
done
log "done in $((SECONDS - t_all)) s${failed:+; failed: ${failed[*]}}"
if ((${#failed[@]})); then
  for name in "${failed[@]}"; do
    if required "$name"; then
      log "PDSD_ORACLES_REQUIRED=${PDSD_ORACLES_REQUIRED}: the oracle tests need .venv-$name; failing"
      exit 1
    fi
  done
  log "their oracle tests will skip (rerun scripts/setup_oracles.sh ${failed[*]} to retry)"
fi
exit 0
