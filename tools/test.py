"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config; the config's default_scope decides.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
                                           [--tta] [--data-root DIR] [--cfg-options k=v ...] [--launcher ...]
"""
import argparse
import os
import os.path as osp
import sys

# configs under projects/ import their code as projects.<name>: make the repository importable
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mavit_mm.config.dataset_checks import explain_dataset_errors
from mavit_mm.config.run_config import run_splits, test_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help="test config: a file, or a stock one as 'mmdet::swin/....py'")
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation metrics are written')
    parser.add_argument('--out', help='dump the raw predictions to this .pkl file')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='draw predictions into this folder (relative paths: under the work dir)')
    parser.add_argument('--tta', action='store_true', help="test-time augmentation of the config's tta_model")
    parser.add_argument('--data-root', help='dataset root, replacing the config\'s')
    parser.add_argument(
        '--cuda-graphs',
        nargs='?',
        const='eval',
        choices=['eval'],
        help='replay the backbone from CUDA graphs (CUDAGraphHook): eval, the one mode a test uses (the '
        'default when no mode is given); for fixed-size test inputs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file, got {args.out}')
    options = {k: v for k, v in vars(args).items() if k not in ('config', 'checkpoint', 'out', 'local_rank')}
    cfg = test_config(args.config, args.checkpoint, **options)
    with explain_dataset_errors(cfg, run_splits(cfg, 'test')):
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        if args.out:
            if cfg.get('default_scope') == 'mmdet':
                from mmdet.evaluation import DumpDetResults  # COCO-style boxes and RLE masks
                runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
            else:
                runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
        runner.test()


if __name__ == '__main__':
    main()
