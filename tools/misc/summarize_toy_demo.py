"""Print the toy main job's metrics, check that the models learned, and list the drawn predictions.

    python tools/misc/summarize_toy_demo.py [WORK_ROOT=work_dirs]

Reads the metrics mmengine wrote for the last test run of work_dirs/toy_mask_rcnn and
work_dirs/toy_upernet; exits 1 if a metric is below what an untrained model could reach.
"""
import glob
import os.path as osp
import sys

from mavit_mm.analysis.logs import last_test_metrics

# Thresholds well above what a model that learned nothing reaches and well below what the toy runs
# reached (docs/toy.md): the untrained detector scores 0.000 bbox and segm mAP, the fine-tuned one
# 0.65 / 0.76; predicting "background" everywhere gives a mIoU of about 25 (1 of 4 classes), the toy
# UperNet 92.
CHECKS = {
    'toy_upernet': [('mIoU', 80.0)],
    'toy_mask_rcnn': [('coco/bbox_mAP', 0.3), ('coco/segm_mAP', 0.3)],
}


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else 'work_dirs'
    ok = True
    print(f"\n{'job':<16}{'metric':<16}{'value':>8}{'needs':>8}")
    for job, checks in CHECKS.items():
        metrics = last_test_metrics(osp.join(root, job)) or {}
        for key, need in checks:
            value = metrics.get(key)
            passed = value is not None and value >= need
            ok &= passed
            shown = 'missing' if value is None else f'{value:.3f}'
            print(f"{job:<16}{key:<16}{shown:>8}{need:>8}  {'ok' if passed else 'BELOW'}")
        drawn = [
            f for f in glob.glob(osp.join(root, job, '**', 'vis*', '**', '*.*'), recursive=True)
            if f.endswith(('.png', '.jpg'))
        ]
        print(f'{job:<16}{len(drawn)} drawn predictions under {osp.join(root, job)}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
