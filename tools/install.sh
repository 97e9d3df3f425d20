#!/usr/bin/env bash
# Install the OpenMMLab 2.x stack and mavit-mm into the current Python environment.
#
#   bash tools/install.sh                       # from PyPI
#   bash tools/install.sh --wheelhouse DIR      # offline, from a folder of wheels (+ mmcv-2.1.0.tar.gz);
#                                               # fill it on a connected machine with
#                                               # pip download -r requirements.txt -d DIR, plus mmcv's sdist
#
# What it does, and why (see docs/install.md):
#   1. keeps an installed torch; installs torch + the matching torchvision where there is none;
#   2. builds mmcv 2.1.0 from source with its compiled ops against that torch (PyPI has no wheel
#      for current torch) without build isolation, so the build sees torch; CUDA ops when a GPU and
#      a CUDA toolkit are visible (or MMCV_CUDA=1), CPU ops otherwise. The built wheel is cached in
#      $MAVIT_CACHE (default ~/.cache/mavit_mm), keyed by torch version and CUDA, so rebuilds are rare;
#   3. installs the pinned stack (requirements.txt) and this package in editable mode;
#   4. imports everything and prints the versions.
# Running it again on the same machine only re-checks (seconds).
#
# Environment: PYTHON (default python3), MAVIT_CACHE, MMCV_CUDA (0/1, default auto),
#              TORCH_CUDA_ARCH_LIST (default: the visible GPU's), MAX_JOBS (default: nproc).
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MAVIT_CACHE:-$HOME/.cache/mavit_mm}
WHEELHOUSE=""
MMCV_VERSION=2.1.0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

PIP=("$PYTHON" -m pip install --disable-pip-version-check)
if [[ -n "$WHEELHOUSE" ]]; then
  PIP+=(--no-index --find-links "$WHEELHOUSE")
fi
log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# ---------------------------------------------------------------- fast path: already installed
if "$PYTHON" "$ROOT/tools/misc/check_env.py" --quiet --root "$ROOT" 2>/dev/null; then
  log "everything already installed"
  "$PYTHON" "$ROOT/tools/misc/check_env.py" --root "$ROOT"
  exit 0
fi

# ---------------------------------------------------------------- 1. torch (kept if present)
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  log "no torch found: installing torch and torchvision"
  "${PIP[@]}" torch torchvision
fi
TORCH_VERSION=$("$PYTHON" -c "import torch; print(torch.__version__.split('+')[0])")
TORCH_MINOR=$(echo "$TORCH_VERSION" | cut -d. -f2)
if ! "$PYTHON" -c "import torchvision" 2>/dev/null; then
  # torchvision 0.(minor+15) pairs with torch 2.minor (0.29 <-> 2.14, 0.26 <-> 2.11).
  TV="0.$((TORCH_MINOR + 15)).*"
  log "torch $TORCH_VERSION has no torchvision: installing torchvision==$TV (needed by mmpretrain.models)"
  "${PIP[@]}" --no-deps "torchvision==$TV" \
    || log "WARNING: no torchvision for torch $TORCH_VERSION; classification configs will not import"
fi
# mmcv's setup.py and mmengine's `mmdet::` config resolution import pkg_resources (gone in setuptools 82).
"${PIP[@]}" "setuptools>=77.0.3,<82" wheel
"${PIP[@]}" ninja || log "no ninja: mmcv builds one file at a time (slower)"

# ---------------------------------------------------------------- 2. mmcv with compiled ops
mmcv_ok() {
  "$PYTHON" - <<EOF 2>/dev/null
import mmcv, mmcv.ops
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
from mmcv import _ext  # noqa: F401  (compiled ops)
EOF
}
if ! mmcv_ok; then
  if [[ -z "${MMCV_CUDA:-}" ]]; then
    MMCV_CUDA=$("$PYTHON" -c "import torch
from torch.utils.cpp_extension import CUDA_HOME
print(int(torch.cuda.is_available() and torch.version.cuda is not None and CUDA_HOME is not None))")
  fi
  if [[ "$MMCV_CUDA" == 1 && -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    export TORCH_CUDA_ARCH_LIST
  fi
  TAG="torch${TORCH_VERSION}-py$("$PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
  [[ "$MMCV_CUDA" == 1 ]] && TAG="$TAG-cuda${TORCH_CUDA_ARCH_LIST// /_}" || TAG="$TAG-cpu"
  WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-$TAG"
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    if [[ -n "$WHEELHOUSE" && -f "$WHEELHOUSE/mmcv-$MMCV_VERSION.tar.gz" ]]; then
      cp "$WHEELHOUSE/mmcv-$MMCV_VERSION.tar.gz" "$BUILD/"
    else
      "$PYTHON" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$BUILD" "mmcv==$MMCV_VERSION"
    fi
    tar xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    if (( TORCH_MINOR >= 14 )); then
      # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
      sed -i 's/c++17/c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    fi
    log "building mmcv $MMCV_VERSION ($TAG) with compiled ops: this takes 5-20 minutes once"
    (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_CUDA" \
      MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PYTHON" -m pip wheel --disable-pip-version-check \
      --no-build-isolation --no-deps -w "$BUILD/dist" .)
    mkdir -p "$WHEEL_DIR"
    # Rename into place only once complete, so an interrupted build never leaves a cached wheel.
    for w in "$BUILD"/dist/mmcv-*.whl; do cp "$w" "$WHEEL_DIR/.tmp" && mv "$WHEEL_DIR/.tmp" "$WHEEL_DIR/$(basename "$w")"; done
  fi
  log "installing mmcv from $WHEEL_DIR"
  "$PYTHON" -m pip install --disable-pip-version-check --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

# ---------------------------------------------------------------- 3. the stack and this package
log "installing requirements.txt"
"${PIP[@]}" -r "$ROOT/requirements.txt"
log "installing mavit_mm (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

# ---------------------------------------------------------------- 4. check
"$PYTHON" "$ROOT/tools/misc/check_env.py" --root "$ROOT"
