"""``benchmark.py runner [CONFIG ...]``: whole training iterations through ``tools/train.py`` on the toy data.

What ``train-iter`` leaves out, the data pipeline and the Runner's hooks, measured as a user's run has them:
each config (default: the toy UperNet and the toy Mask R-CNN) is trained for ``--epochs`` epochs of the bundled
toy data (written under ``--toy-root`` if absent) by ``tools/train.py`` in a subprocess, once per
``--switches`` entry (default: plain and ``--fast-train``), without validation; mmengine's LoggerHook logs,
per iteration, ``time`` (the whole iteration) and ``data_time`` (of it, the wait for the dataloader).
Reported: the medians after ``--warmup`` logged iterations, and ``data_time``'s share: a data pipeline that
keeps up has a share near 0.
"""
import argparse
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

from ..benchmarking import environment
from ..logs import scalars_files, training_steps
from . import UsageError, print_env, switch_args

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TOY_CONFIGS = ('configs/toy/upernet_mavit-t_toy.py', 'configs/toy/mask-rcnn_mavit-t_fpn_toy.py')


def _train_arguments(config: str, toy_root: str, epochs: int, iters: int) -> List[str]:
    """``--data-root`` (the toy data of the config's codebase) and ``--cfg-options`` for a short run: the
    config's own loop, shortened, never validating, no init from another run's checkpoint, every iteration
    logged unsmoothed."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    data_root = osp.join(toy_root, 'coco' if cfg.get('default_scope') == 'mmdet' else 'ade')
    opts = ['model.backbone.init_cfg=None', 'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    if 'max_epochs' in cfg.train_cfg:
        opts += [
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs + 1}',
            f'default_hooks.checkpoint.interval={epochs + 1}'
        ]
    else:
        opts += [
            f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}',
            f'default_hooks.checkpoint.interval={iters + 1}'
        ]
    return ['--data-root', data_root, '--cfg-options', *opts]


def iteration_times(log_path: str, warmup: int) -> Dict[str, float]:
    """Medians of ``time`` and ``data_time`` (seconds) over the training iterations logged in a run's
    ``vis_data/scalars.json`` after the first ``warmup``."""
    steps = training_steps(log_path)[warmup:]
    if not steps:
        raise ValueError(f'{log_path}: no training iteration logged after {warmup} warm-up ones')
    time = statistics.median(d['time'] for d in steps)
    data = statistics.median(d['data_time'] for d in steps)
    return dict(time_ms=1e3 * time, data_time_ms=1e3 * data, data_share=data / time, iters=len(steps))


def run(args: argparse.Namespace) -> dict:
    from mavit_mm.toy_data import make_toy_dataset
    missing = [c for c in args.configs if not osp.isfile(c)]
    if missing:
        raise UsageError(f'no such config: {", ".join(missing)}')
    env = environment()
    print_env(env)
    make_toy_dataset(args.toy_root, num_train=args.toy_images)
    rows = []
    for config in args.configs:
        for switch in args.switches:
            with tempfile.TemporaryDirectory() as work_dir:
                cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
                cmd += ['--no-validate', *switch_args(switch)] + ['--amp'] * args.amp
                cmd += _train_arguments(config, args.toy_root, args.epochs, args.iters)
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f'benchmark runner: {" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
                row = iteration_times(scalars_files(work_dir)[-1], args.warmup)
            row.update(config=osp.splitext(osp.basename(config))[0], switch=switch, amp=args.amp)
            rows.append(row)
            print(
                f'  {row["config"]:40s} {switch:28s} {row["time_ms"]:9.1f} ms / iter, '
                f'data {row["data_time_ms"]:7.1f} ms ({row["data_share"]:.0%}), {row["iters"]} iterations',
                flush=True)
    print('\n| config | switches | median ms / iter | median data_time ms | data share | iterations |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["config"]} | {r["switch"]} | {r["time_ms"]:.1f} | '
              f'{r["data_time_ms"]:.1f} | {r["data_share"]:.0%} | {r["iters"]} |')
    return dict(env=env, amp=args.amp, rows=rows)
