"""Hooks that tests put into the runs they launch (``custom_imports=dict(imports=['run_probes'])`` with
``tests/`` on ``PYTHONPATH``): what each process of a distributed run computed, and a slower loop so that a
test can stop a run midway."""
import json
import os
import os.path as osp
import time

import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankLossProbe(Hook):
    """Append ``{"iter": i, "loss": ...}`` after every training iteration to ``out_dir/losses_rank{R}.jsonl``,
    one file per process (mmengine logs rank 0's losses only)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        os.makedirs(self.out_dir, exist_ok=True)
        with open(osp.join(self.out_dir, f'losses_rank{rank}.jsonl'), 'a') as f:
            f.write(json.dumps({'iter': runner.iter + 1, 'loss': float(outputs['loss'])}) + '\n')


@HOOKS.register_module()
class IterDelayProbe(Hook):
    """Sleep ``seconds`` after every training iteration."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        time.sleep(self.seconds)
