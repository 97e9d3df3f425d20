#!/usr/bin/env bash
# The main job on the bundled toy data, on CPU (or GPU if there is one):
#   1. writes the toy shapes dataset to data/toy (COCO instances + ADE20K layout) if absent;
#   2. trains MAViT-T UperNet from scratch and evaluates it (mIoU);
#   3. trains MAViT-T Mask R-CNN, its backbone initialised from step 2 (as the paper starts from ImageNet
#      weights), and evaluates it with the COCO evaluator (bbox + segm mAP);
#   4. draws the predictions of both under work_dirs/toy_*/ and checks the metrics show learning.
# About 12-18 minutes on 2 CPU cores. Usage: bash tools/run_toy_demo.sh [WORK_ROOT=work_dirs]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=${1:-work_dirs}
PY=${PYTHON:-python}

$PY tools/misc/make_toy_data.py data/toy

train_and_test() {  # CONFIG_NAME WORK_NAME CHECKPOINT_NAME [train.py options]
  local cfg=configs/toy/$1.py dir=$WORK/$2 ckpt=$3
  shift 3
  echo "=== training $cfg -> $dir"
  $PY tools/train.py "$cfg" --work-dir "$dir" "$@"
  echo "=== testing $dir/$ckpt.pth, drawing predictions under $dir"
  $PY tools/test.py "$cfg" "$dir/$ckpt.pth" --work-dir "$dir" --show-dir vis > "$dir/test.log" 2>&1 \
    || { tail -20 "$dir/test.log"; exit 1; }
  grep -E "(Epoch|Iter)\(test\)" "$dir/test.log" | tail -1
}

train_and_test upernet_mavit-t_toy toy_upernet iter_400
train_and_test mask-rcnn_mavit-t_fpn_toy toy_mask_rcnn epoch_3 \
  --cfg-options model.backbone.init_cfg.checkpoint="$WORK/toy_upernet/iter_400.pth"
$PY tools/misc/summarize_toy_demo.py "$WORK"
