#!/usr/bin/env bash
# Install the OpenMMLab 2.x stack and mavit-mm into the current Python environment.
#
#   bash tools/install.sh                       # online (PyPI or your pip index)
#   bash tools/install.sh --wheelhouse DIR      # offline: only from DIR (tools/misc/make_wheelhouse.sh fills it)
#
# Steps (each prints its name; a failure names the step and the fix; see docs/install.md):
#   1. torch      keep an installed torch (CPU or CUDA); install torch + torchvision where there is none
#   2. build      setuptools >=77.0.3,<82, wheel, ninja (only what is missing or out of range)
#   3. opencv     keep any installed OpenCV distribution; else install opencv-python-headless
#   4. stack      requirements.txt, then requirements/openmmlab.txt with --no-deps
#   5. mmcv       fetch mmcv 2.1.0's source, check its SHA-256, build it with compiled ops against this torch
#                 (CUDA ops where a GPU and CUDA toolkit are visible) unless a wheel built from the same
#                 source for the same torch / Python / CUDA is cached
#   6. mavit-mm   this repository, editable
#   7. check      import everything and print the versions
# Anything already installed that a step would replace is listed before it is replaced.
# Interrupted? Run it again: finished steps are skipped, an mmcv build resumes where it stopped.
#
# Environment: PYTHON (default python3)
#              MAVIT_CACHE (default ~/.cache/mavit_mm): the mmcv source and the resumable build folder
#              MAVIT_MMCV_WHEELS (default $MAVIT_CACHE/mmcv-wheels): compiled mmcv wheels, one folder per
#                  <sdist sha256>-<torch>-<python>-<cpu|cuda arch>
#              MMCV_CUDA (0/1, default auto), TORCH_CUDA_ARCH_LIST (default: the visible GPU's),
#              MAX_JOBS (default: nproc)
set -Eeuo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MAVIT_CACHE:-$HOME/.cache/mavit_mm}
WHEELS=${MAVIT_MMCV_WHEELS:-$CACHE/mmcv-wheels}
WHEELHOUSE=""
MMCV_VERSION=2.1.0
# SHA-256 of mmcv-2.1.0.tar.gz as published on PyPI.
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
OPENCV_DISTS="opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheelhouse)
      [[ -d "${2:-}" ]] || { echo "install.sh: --wheelhouse needs an existing folder, got '${2:-}'" >&2; exit 2; }
      WHEELHOUSE=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
STEP="start"; FIX="run again with bash -x tools/install.sh to see the failing command"
step() { STEP=$1; FIX=$2; log "step $STEP"; }
trap 'rc=$?; printf "\033[1m[install] FAILED in step %s (exit %s)\033[0m\n  fix: %s\n" "$STEP" "$rc" "$FIX" >&2' ERR

command -v "$PYTHON" >/dev/null || { echo "install.sh: no '$PYTHON' on PATH (set PYTHON=/path/to/python)" >&2; exit 2; }
PIP=("$PYTHON" -m pip --disable-pip-version-check)
INSTALL=("${PIP[@]}" install)
if [[ -n "$WHEELHOUSE" ]]; then
  INSTALL+=(--no-index --find-links "$WHEELHOUSE")
  FROM="the wheelhouse $WHEELHOUSE"
else
  FROM="the package index"
fi
py() { "$PYTHON" -c "$1"; }

# Lists what installing "$@" (pip install arguments) would replace, before it does.
say_replacements() {
  local report
  report=$(mktemp)
  if "${INSTALL[@]}" --dry-run --quiet --report "$report" "$@" >/dev/null 2>&1; then
    "$PYTHON" - "$report" <<'EOF'
import json, sys
from importlib import metadata
for item in json.load(open(sys.argv[1])).get('install', []):
    name, new = item['metadata']['name'], item['metadata']['version']
    try:
        old = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    if old != new:
        print(f'[install] replacing {name} {old} with {new}')
EOF
  fi
  rm -f "$report"
}

# ---------------------------------------------------------------- already complete: seconds
if "$PYTHON" "$ROOT/tools/misc/check_env.py" --quiet --root "$ROOT" 2>/dev/null; then
  log "everything already installed"
  "$PYTHON" "$ROOT/tools/misc/check_env.py" --root "$ROOT"
  exit 0
fi

step "0 (environment)" "use a virtual environment: $PYTHON -m venv --system-site-packages .venv && PYTHON=.venv/bin/python bash tools/install.sh (--system-site-packages keeps the system's torch)"
"${PIP[@]}" --version >/dev/null
if py "import sys, sysconfig, os; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))))" \
   && [[ -z "${PIP_BREAK_SYSTEM_PACKAGES:-}" ]]; then
  log "this Python is managed by the system (EXTERNALLY-MANAGED): pip may not install into it"
  false
fi

# ---------------------------------------------------------------- 1. torch (kept if present)
step "1 (torch)" "install torch for your platform first (https://pytorch.org/get-started), then run this again; offline, put torch and torchvision wheels in the wheelhouse"
if ! py "import torch" 2>/dev/null; then
  log "no torch found: installing torch and torchvision from $FROM"
  "${INSTALL[@]}" torch torchvision
fi
TORCH_VERSION=$(py "import torch; print(torch.__version__.split('+')[0])")
TORCH_MINOR=$(echo "$TORCH_VERSION" | cut -d. -f2)
if ! py "import torchvision" 2>/dev/null; then
  # torchvision 0.(minor+15) pairs with torch 2.minor (0.29 <-> 2.14, 0.26 <-> 2.11).
  TV="0.$((TORCH_MINOR + 15)).*"
  FIX="install the torchvision that matches torch $TORCH_VERSION (pip install torchvision==$TV), then run this again"
  log "torch $TORCH_VERSION has no torchvision: installing torchvision==$TV --no-deps (mmpretrain.models needs it)"
  "${INSTALL[@]}" --no-deps "torchvision==$TV"
fi
log "torch $TORCH_VERSION ($(py "import torch; print('CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU')"))"

# ---------------------------------------------------------------- 2. build tools
step "2 (build tools)" "pip install 'setuptools>=77.0.3,<82' wheel ninja (offline: add their wheels to the wheelhouse, tools/misc/make_wheelhouse.sh does), then run this again"
if ! py "
import sys
from importlib.metadata import version
from packaging.version import Version
sys.exit(not (Version('77.0.3') <= Version(version('setuptools')) < Version('82')))" 2>/dev/null; then
  say_replacements "setuptools>=77.0.3,<82"
  "${INSTALL[@]}" "setuptools>=77.0.3,<82"
fi
py "import wheel" 2>/dev/null || "${INSTALL[@]}" wheel
command -v ninja >/dev/null || py "import ninja" 2>/dev/null || "${INSTALL[@]}" ninja \
  || log "no ninja: mmcv builds one file at a time (slower)"

# ---------------------------------------------------------------- 3. OpenCV (any distribution)
step "3 (opencv)" "install an OpenCV distribution yourself (pip install opencv-python-headless, or opencv-python), then run this again"
FOUND_CV=$("$PYTHON" - $OPENCV_DISTS <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f'{name} {metadata.version(name)}'); break
    except metadata.PackageNotFoundError:
        pass
EOF
)
if [[ -n "$FOUND_CV" ]] && py "import cv2" 2>/dev/null; then
  log "keeping the installed OpenCV: $FOUND_CV"
else
  if [[ -n "$FOUND_CV" ]]; then
    log "$FOUND_CV is installed but cv2 does not import: installing opencv-python-headless"
  else
    log "no OpenCV found: installing opencv-python-headless"
  fi
  "${INSTALL[@]}" opencv-python-headless
fi

# ---------------------------------------------------------------- 4. the stack
step "4 (OpenMMLab stack)" "see pip's message above; offline, the wheelhouse lacks a package: fill it with tools/misc/make_wheelhouse.sh"
say_replacements -r "$ROOT/requirements.txt"
"${INSTALL[@]}" -r "$ROOT/requirements.txt"
say_replacements --no-deps -r "$ROOT/requirements/openmmlab.txt"
"${INSTALL[@]}" --no-deps -r "$ROOT/requirements/openmmlab.txt"

# ---------------------------------------------------------------- 5. mmcv with compiled ops (imports mmengine: after the stack)
mmcv_ok() {
  "$PYTHON" - <<EOF 2>/dev/null
import mmcv, mmcv.ops
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
from mmcv import _ext  # noqa: F401  (compiled ops)
EOF
}
if ! mmcv_ok; then
  step "5a (mmcv source)" "check your network / pip index (online) or that the wheelhouse has mmcv-$MMCV_VERSION.tar.gz (offline), then run this again"
  SRC_DIR="$CACHE/src"
  SDIST="$SRC_DIR/mmcv-$MMCV_VERSION.tar.gz"
  mkdir -p "$SRC_DIR"
  rm -f "$SDIST"
  if [[ -n "$WHEELHOUSE" ]]; then
    cp "$WHEELHOUSE/mmcv-$MMCV_VERSION.tar.gz" "$SDIST.part"
  else
    # No build isolation: pip prepares the sdist's metadata with the setuptools installed above (an isolated
    # build environment would take the newest setuptools, which has no pkg_resources).
    DL=$(mktemp -d)
    "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$DL" "mmcv==$MMCV_VERSION"
    mv "$DL/mmcv-$MMCV_VERSION.tar.gz" "$SDIST.part"
    rm -rf "$DL"
  fi
  SHA=$(py "import hashlib, sys; print(hashlib.sha256(open('$SDIST.part', 'rb').read()).hexdigest())")
  if [[ "$SHA" != "$MMCV_SHA256" ]]; then
    FIX="the mmcv-$MMCV_VERSION.tar.gz you got is not PyPI's (sha256 $SHA, expected $MMCV_SHA256): fetch it again from PyPI"
    false
  fi
  mv "$SDIST.part" "$SDIST"

  if [[ -z "${MMCV_CUDA:-}" ]]; then
    MMCV_CUDA=$(py "import torch
from torch.utils.cpp_extension import CUDA_HOME
print(int(torch.cuda.is_available() and torch.version.cuda is not None and CUDA_HOME is not None))")
  fi
  if [[ "$MMCV_CUDA" == 1 && -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$(py "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    export TORCH_CUDA_ARCH_LIST
  fi
  KEY="${SHA:0:16}-torch$(py "import torch; print(torch.__version__)")-py$(py 'import sys; print("%d%d" % sys.version_info[:2])')"
  if [[ "$MMCV_CUDA" == 1 ]]; then KEY="$KEY-cuda$(py 'import torch; print(torch.version.cuda)')-sm${TORCH_CUDA_ARCH_LIST// /_}"; else KEY="$KEY-cpu"; fi
  WHEEL_DIR="$WHEELS/$KEY"
  if ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "mmcv $MMCV_VERSION: using the wheel built earlier from the same source for the same torch ($WHEEL_DIR)"
  else
    step "5b (mmcv build)" "read the compiler error above; a CUDA build needs nvcc matching torch's CUDA (or MMCV_CUDA=0 for CPU ops); then run this again (the build resumes)"
    # A fixed build folder per key: an interrupted build resumes (ninja rebuilds only what is missing).
    BUILD="$CACHE/build/$KEY"
    if [[ ! -f "$BUILD/.unpacked" ]]; then
      rm -rf "$BUILD"; mkdir -p "$BUILD"
      tar xzf "$SDIST" -C "$BUILD"
      if (( TORCH_MINOR >= 14 )); then
        # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
        sed -i 's/c++17/c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
      fi
      touch "$BUILD/.unpacked"
    else
      log "resuming the mmcv build in $BUILD"
    fi
    log "building mmcv $MMCV_VERSION ($KEY) with compiled ops: 5-20 minutes, once"
    (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_CUDA" \
      MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" .)
    mkdir -p "$WHEEL_DIR"
    # Into the cache under its final name only once complete: an interrupted copy never passes for a wheel.
    for w in "$BUILD"/dist/mmcv-*.whl; do cp "$w" "$WHEEL_DIR/.part" && mv "$WHEEL_DIR/.part" "$WHEEL_DIR/$(basename "$w")"; done
    rm -rf "$BUILD"
  fi
  step "5c (mmcv install)" "remove the cached wheel folder $WHEEL_DIR and run this again"
  "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  mmcv_ok || { log "mmcv installed from $WHEEL_DIR does not import with its ops"; false; }
fi

# ---------------------------------------------------------------- 6. this package
step "6 (mavit-mm)" "pip install --no-deps --no-build-isolation -e . in $ROOT shows the error directly"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"

# ---------------------------------------------------------------- 7. check
step "7 (check)" "the PROBLEM lines above name what is missing"
"$PYTHON" "$ROOT/tools/misc/check_env.py" --root "$ROOT"
log "done"
