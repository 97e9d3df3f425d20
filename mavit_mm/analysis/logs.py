"""Reading what mmengine's LoggerHook wrote into a work dir: the one log reader of the tools.

A run writes ``WORK_DIR/<timestamp>/<timestamp>.json`` (one json object per logged step; a test
run's last line holds its metrics) and ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (training
losses and validation metrics).
"""
import glob
import json
import os.path as osp
from typing import Container, Dict, List, Optional


def _json_lines(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_logs(work_dir: str) -> List[str]:
    """The json logs of the runs in ``work_dir``, oldest first."""
    return sorted(
        p for p in glob.glob(osp.join(work_dir, '*', '*.json'))
        if osp.basename(p) == osp.basename(osp.dirname(p)) + '.json')


def last_test_metrics(work_dir: str, keys: Optional[Container[str]] = None) -> Optional[Dict[str, float]]:
    """Metrics of the newest run in ``work_dir`` that only tested (its log holds no loss), or None.
    With ``keys``, only a logged line holding one of them counts."""
    for path in reversed(run_logs(work_dir)):
        lines = _json_lines(path)
        if not lines or any('loss' in line for line in lines):
            continue
        found = [d for d in lines if keys is None or any(k in d for k in keys)]
        if found:
            return found[-1]
    return None


def scalars_files(work_dir: str) -> List[str]:
    """The ``vis_data/scalars.json`` of the runs in ``work_dir``, oldest first."""
    return sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def training_steps(scalars_path: str) -> List[dict]:
    """The training iterations a ``scalars.json`` logged (entries with ``loss``, ``time`` and ``data_time``;
    times in seconds), in order."""
    return [d for d in _json_lines(scalars_path) if 'loss' in d and 'time' in d and 'data_time' in d]


def last_val_metrics(work_dir: str, keys: Container[str]) -> Optional[Dict[str, float]]:
    """The newest validation entry (one holding any of ``keys``) of the newest run's ``scalars.json``."""
    for path in reversed(scalars_files(work_dir)):
        vals = [d for d in _json_lines(path) if any(k in d for k in keys)]
        if vals:
            return vals[-1]
    return None
