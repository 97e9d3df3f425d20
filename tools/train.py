"""Train a model from an mmdet, mmseg or mmpretrain config; the config's default_scope decides.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--fast-train]
                                 [--cuda-graphs MODE] [--auto-scale-lr]
                                 [--data-root DIR] [--cfg-options k=v ...] [--launcher pytorch|slurm]
"""
import argparse
import logging
import os
import os.path as osp
import sys

# Before anything touches CUDA: growable segments instead of fixed-size ones cut the fragmentation of
# varying batch shapes and of CUDA-graph pools (--cuda-graphs train; docs/speed.md).
# A value set by the user wins.
os.environ.setdefault('PYTORCH_CUDA_ALLOC_CONF', 'expandable_segments:True')

# configs under projects/ import their code as projects.<name>: make the repository importable
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch
from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mavit_mm.engine.fast_train import apply_fast_train
from mavit_mm.utils.checkpoint_file import check_checkpoint_file
from mavit_mm.utils.config_tools import (add_cuda_graph_hook, check_custom_imports, check_datasets, load_config,
                                         set_data_root, train_in_fp32, use_atomic_checkpoints)
from mavit_mm.utils.dataset_checks import explain_dataset_errors
from mavit_mm.utils.launch import prepare_cpu_distributed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector, segmentor or classifier')
    parser.add_argument('config', help="train config: a file, or a stock one as 'mmdet::swin/....py'")
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CKPT, or without a value from the latest checkpoint in work_dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument(
        '--cuda-graphs',
        choices=['eval', 'train', 'all'],
        help='replay the backbone from CUDA graphs (CUDAGraphHook): train for fixed-size crops')
    parser.add_argument(
        '--fast-train',
        action='store_true',
        help='merged param groups + fused optimizer, pinned memory, on-device RoI assignment, sampling and mask '
        "targets (mavit_mm.engine.fast_train; same losses); configs with fast_train=True get all but the sampler")
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help="scale the lr by (total batch size / the config's auto_scale_lr.base_batch_size)")
    parser.add_argument('--data-root', help='dataset root, replacing the config\'s (all splits)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config settings, e.g. model.backbone.arch=small')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    check_custom_imports(cfg)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    prepare_cpu_distributed(cfg, args.launcher)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join('work_dirs',
                                                                    osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.cuda_graphs:
        add_cuda_graph_hook(cfg, args.cuda_graphs)
    if args.fast_train or cfg.get('fast_train', False):
        # the config's opt-in keeps the stock sampler (a GPU draws another random stream); --fast-train all
        origin = '--fast-train' if args.fast_train else "the config's fast_train=True"
        for change in apply_fast_train(cfg, sampler=args.fast_train):
            print_log(f'{origin}: {change}', logger='current')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint_file(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None

    if not torch.cuda.is_available() and train_in_fp32(cfg):
        print_log(
            'no CUDA device: training in fp32 (mmengine\'s AmpOptimWrapper needs a GPU; the config asks '
            'for mixed precision)',
            logger='current',
            level=logging.WARNING)
    use_atomic_checkpoints(cfg)
    splits = ['train'] if args.no_validate else ['train', 'val']
    check_datasets(cfg, splits)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    with explain_dataset_errors(cfg, splits):
        runner.train()


if __name__ == '__main__':
    main()
