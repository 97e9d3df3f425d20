"""Put test results of mmengine runs beside the paper's figures.

    python tools/analysis_tools/collect_results.py work_dirs/mask-rcnn_mavit-t_fpn_1x_coco work_dirs/upernet_*
    python tools/analysis_tools/collect_results.py work_dirs/* --out results.md

For every work dir it reads the metrics mmengine's LoggerHook dumped after the newest test run
(``WORK_DIR/<timestamp>/<timestamp>.json``, written by ``tools/test.py``); a dir with no test run
falls back to the last validation entry of ``vis_data/scalars.json`` (marked "val"). The config is
recognised by the config file mmengine dumped into the work dir. Rows whose config reproduces a
row of the paper get the paper's figure and the difference; COCO AP is printed in %, as the paper.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

from mavit_mm.analysis.logs import last_test_metrics, last_val_metrics
from mavit_mm.analysis.paper import PAPER_ROWS
from mavit_mm.utils.fileio import write_text_atomic

# What mmengine's evaluators write -> (the paper's / metafile name, factor to %).
METRICS: Dict[str, Tuple[str, float]] = {
    'coco/bbox_mAP': ('box AP', 100),
    'coco/bbox_mAP_50': ('box AP@50', 100),
    'coco/bbox_mAP_75': ('box AP@75', 100),
    'coco/bbox_mAP_s': ('box AP_s', 100),
    'coco/bbox_mAP_m': ('box AP_m', 100),
    'coco/bbox_mAP_l': ('box AP_l', 100),
    'coco/segm_mAP': ('mask AP', 100),
    'coco/segm_mAP_50': ('mask AP@50', 100),
    'coco/segm_mAP_75': ('mask AP@75', 100),
    'mIoU': ('mIoU', 1),
    'accuracy/top1': ('Top 1 Accuracy', 1)
}
HEADLINE = ('box AP', 'mask AP', 'mIoU', 'Top 1 Accuracy')


def find_config_name(work_dir: str) -> str:
    """The stem of the config mmengine dumped into ``work_dir`` (else the dir's own name)."""
    dumped = sorted(glob.glob(osp.join(work_dir, '*.py')))
    known = [p for p in dumped if osp.splitext(osp.basename(p))[0] in PAPER_ROWS]
    if known or dumped:
        return osp.splitext(osp.basename((known or dumped)[0]))[0]
    return osp.basename(osp.normpath(work_dir))


def read_metrics(work_dir: str) -> Tuple[Optional[Dict[str, float]], str]:
    """Metrics of the newest test run in ``work_dir`` (or its last validation), and where they came from."""
    metrics = last_test_metrics(work_dir, METRICS)
    if metrics is not None:
        return metrics, 'test'
    metrics = last_val_metrics(work_dir, METRICS)
    if metrics is not None:
        return metrics, f'val (step {metrics.get("step", "?")})'
    return None, 'no test or validation results found'


def collect(work_dirs: List[str], all_metrics: bool = False) -> List[dict]:
    """One row per (work dir, metric): config, metric, ours, paper, diff (all in %)."""
    rows = []
    for work_dir in work_dirs:
        name = find_config_name(work_dir)
        metrics, source = read_metrics(work_dir)
        if metrics is None:
            rows.append(
                dict(config=name, work_dir=work_dir, metric='-', ours=None, paper=None, diff=None, source=source))
            continue
        paper = PAPER_ROWS[name].metrics if name in PAPER_ROWS else {}
        for key, (metric, factor) in METRICS.items():
            if key not in metrics or not (all_metrics or metric in HEADLINE):
                continue
            ours = round(float(metrics[key]) * factor, 2)
            ref = paper.get(metric)
            rows.append(
                dict(
                    config=name,
                    work_dir=work_dir,
                    metric=metric,
                    ours=ours,
                    paper=ref,
                    diff=None if ref is None else round(ours - ref, 2),
                    source=source))
    return rows


def to_markdown(rows: List[dict]) -> str:

    def fmt(v, signed=False):
        return '-' if v is None else (f'{v:+.1f}' if signed else f'{v:.1f}')

    lines = ['| config | metric | ours | paper | diff | from |', '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["config"]} | {r["metric"]} | {fmt(r["ours"])} | {fmt(r["paper"])} | '
                     f'{fmt(r["diff"], True)} | {r["source"]} |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='work dirs of test runs (tools/test.py --work-dir)')
    parser.add_argument(
        '--all-metrics', action='store_true', help='every COCO AP, not only box AP / mask AP / mIoU / top-1')
    parser.add_argument('--out', help='also write the markdown table (.md) or the rows (.json) here')
    args = parser.parse_args()
    missing = [d for d in args.work_dirs if not osp.isdir(d)]
    if missing:
        sys.exit(f'collect_results: not a directory: {", ".join(missing)}')
    rows = collect(args.work_dirs, args.all_metrics)
    table = to_markdown(rows)
    print(table, end='')
    if args.out:
        text = json.dumps(rows, indent=2) + '\n' if args.out.endswith('.json') else table
        write_text_atomic(text, args.out)


if __name__ == '__main__':
    main()
