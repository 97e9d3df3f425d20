"""Train a model from an mmdet, mmseg or mmpretrain config; the config's default_scope decides.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--fast-train]
                                 [--cuda-graphs MODE] [--auto-scale-lr]
                                 [--data-root DIR] [--profile N [--profile-start I]]
                                 [--log-input-shapes] [--cfg-options k=v ...] [--launcher pytorch|slurm]
"""
import argparse
import os
import os.path as osp
import sys

# Before anything touches CUDA: growable segments instead of fixed-size ones cut the fragmentation of
# varying batch shapes and of CUDA-graph pools (--cuda-graphs train; docs/speed.md).
# A value set by the user wins.
os.environ.setdefault('PYTORCH_CUDA_ALLOC_CONF', 'expandable_segments:True')

# configs under projects/ import their code as projects.<name>: make the repository importable
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mavit_mm.config.dataset_checks import explain_dataset_errors
from mavit_mm.config.run_config import run_splits, train_config
from mavit_mm.utils.cli_types import positive_int


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
        '--profile',
        type=positive_int,
        metavar='N',
        help="profile N iterations (mmengine's ProfilerHook, CPU and CUDA): logs the ops with the most host time "
        'and the time, kernel launches and GPU-busy time per part of the model; trace in the work dir')
    parser.add_argument(
        '--profile-start',
        type=positive_int,
        default=20,
        metavar='I',
        help='the first profiled iteration (default 20: after the first sizes, compilation and allocator growth)')
    parser.add_argument(
        '--log-input-shapes',
        action='store_true',
        help="log the backbone's input height and width at every iteration (input_h / input_w): to tell what a "
        'new input shape costs from what a seen one does (InputShapeLogHook)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config settings, e.g. model.backbone.arch=small')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    options = {k: v for k, v in vars(args).items() if k not in ('config', 'local_rank')}
    cfg = train_config(args.config, **options)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    with explain_dataset_errors(cfg, run_splits(cfg, 'train')):
        runner.train()


if __name__ == '__main__':
    main()
