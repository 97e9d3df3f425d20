#!/usr/bin/env bash
# Fill a folder with everything `bash tools/install.sh --wheelhouse DIR` needs on a host without network.
#
#   bash tools/misc/make_wheelhouse.sh DIR [--python 3.12] [--platform manylinux_2_28_x86_64] [--with-torch]
#
# Run it on a connected machine. Without --python / --platform the wheels are for this Python and
# machine; with them, for the target (binary wheels only, so any platform can fill any other's folder).
# DIR gets: the wheels of requirements/{runtime,tests,build,openmmlab}.txt and their dependencies,
# opencv-python-headless (used only where the host has no OpenCV), and mmcv 2.1.0's source archive
# (the host builds it against its own torch). torch and torchvision only with --with-torch: offline
# GPU hosts usually have their own.
set -Eeuo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MMCV_VERSION=2.1.0
DIR=""; PYVER=""; PLATFORMS=(); WITH_TORCH=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PYVER=$2; shift 2 ;;
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    --with-torch) WITH_TORCH=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "make_wheelhouse.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) [[ -z "$DIR" ]] || { echo "make_wheelhouse.sh: one folder only (got '$DIR' and '$1')" >&2; exit 2; }
       DIR=$1; shift ;;
  esac
done
[[ -n "$DIR" ]] || { echo "usage: bash tools/misc/make_wheelhouse.sh DIR [--python 3.12] [--platform TAG] [--with-torch]" >&2; exit 2; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
log() { printf '\033[1m[wheelhouse]\033[0m %s\n' "$*"; }
trap 'printf "\033[1m[wheelhouse] FAILED\033[0m: see pip'"'"'s message above (a package with no wheel for the target? try another --platform tag)\n" >&2' ERR

PIP=("$PYTHON" -m pip --disable-pip-version-check)
TARGET=()
if [[ -n "$PYVER" || ${#PLATFORMS[@]} -gt 0 ]]; then
  TARGET=(--only-binary=:all: --implementation cp)
  [[ -n "$PYVER" ]] && TARGET+=(--python-version "$PYVER")
  if [[ ${#PLATFORMS[@]} -eq 0 ]]; then  # manylinux tags pip must match one by one
    PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
               manylinux2014_x86_64 manylinux1_x86_64)
  fi
  for p in "${PLATFORMS[@]}"; do TARGET+=(--platform "$p"); done
fi

log "wheels of the stack's dependencies, the tests and the build tools -> $DIR"
"${PIP[@]}" download "${TARGET[@]}" -d "$DIR" -r "$ROOT/requirements.txt" -r "$ROOT/requirements/build.txt" \
  opencv-python-headless
log "the OpenMMLab packages (installed with --no-deps)"
"${PIP[@]}" download "${TARGET[@]}" --no-deps -d "$DIR" -r "$ROOT/requirements/openmmlab.txt"
if (( WITH_TORCH )); then
  log "torch and torchvision"
  "${PIP[@]}" download "${TARGET[@]}" -d "$DIR" torch torchvision
fi

log "mmcv $MMCV_VERSION source"
if [[ ! -f "$DIR/mmcv-$MMCV_VERSION.tar.gz" ]]; then
  # pip prepares an sdist's metadata even to download it, and mmcv's setup.py imports pkg_resources: so in
  # a throwaway venv with the setuptools (< 82) and wheel just downloaded, without build isolation.
  VENV=$(mktemp -d)
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-index --find-links "$DIR" \
    "setuptools>=77.0.3,<82" wheel
  "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation -d "$DIR" "mmcv==$MMCV_VERSION"
  rm -rf "$VENV"
fi
log "done: $(find "$DIR" -maxdepth 1 -name '*.whl' | wc -l) wheels + mmcv-$MMCV_VERSION.tar.gz in $DIR"
log "on the offline host: bash tools/install.sh --wheelhouse $DIR"
