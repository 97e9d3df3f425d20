"""Speed and memory of MAViT models, backbones and training steps: one entry point, shared flags.

    python tools/analysis_tools/benchmark.py model configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py
    python tools/analysis_tools/benchmark.py backbone --arch t s --settings seg train --precision bf16 --cuda-graphs
    python tools/analysis_tools/benchmark.py train-iter configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py \
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --precision fp16
    python tools/analysis_tools/benchmark.py memory --arch t --shape 800 1344 --with-cp none ffn ffn,stem
    python tools/analysis_tools/benchmark.py onnx --arch t --shape 512 2048 --precision bf16
    python tools/analysis_tools/benchmark.py runner --amp      # tools/train.py on the toy data: time vs data_time
    python tools/analysis_tools/benchmark.py real-run          # tools/train.py + test.py on COCO-sized data
    python tools/analysis_tools/benchmark.py shapes --plain-convs   # what a new input size costs (CUDA)
    python tools/analysis_tools/benchmark.py cold-start     # a first step on an empty kernel cache (CUDA)
    python tools/analysis_tools/benchmark.py launches --arch s   # operators and kernel launches per step

Every subcommand but ``runner``, ``real-run``, ``shapes``, ``cold-start`` and ``launches`` takes --precision
fp32|bf16|fp16, --batch-size, --shape H W, --warmup, --repeats, --device and --out (json, written atomically);
``runner`` and ``real-run`` run tools/train.py (and tools/test.py) and take --warmup and --out. All print the device
and versions first and report medians after warm-up (``benchmark.py SUBCOMMAND -h`` for the rest). Flags mean what
they mean in tools/train.py / test.py: ``--cuda-graphs [eval|train|all]``, ``--fast-path off|auto`` (the backbone's
argument), ``--switches`` entries spelled as tools/train.py's switches, ``--arch`` one or more of t s b l.
The measurements live in ``mavit_mm.analysis.bench`` (one module per subcommand, ``run(args)``); this file
defines the command line.
"""
import argparse
import json
import os.path as osp
from typing import Callable, Dict, List, Optional

import torch
from mmengine.config import DictAction

from mavit_mm.analysis.bench import (PRECISIONS, TRAIN_SWITCHES, UsageError, backbone, cold_start, launches, memory,
                                     model, onnxrt, parse_switch, real_run, runner, shapes, train_iter)
from mavit_mm.utils.cli_types import non_negative_int, positive_int
from mavit_mm.utils.fileio import write_text_atomic

ARCHS = ['t', 's', 'b', 'l']


def switch_entry(text: str) -> str:
    """A ``--switches`` entry, checked (:func:`mavit_mm.analysis.bench.parse_switch`)."""
    try:
        parse_switch(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_common(parser: argparse.ArgumentParser,
               *,
               shape=None,
               batch_size=None,
               warmup: int = 5,
               repeats: int = 20,
               precision: Optional[str] = 'bf16') -> None:
    """``--precision``, ``--batch-size``, ``--shape``, ``--warmup``, ``--repeats``, ``--device``, ``--out``."""
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default=precision,
        help='fp32, or bf16 / fp16 autocast' +
        (' (default: %(default)s)' if precision else ' (default: what the config says)'))
    parser.add_argument('--batch-size', type=positive_int, default=batch_size, help='images per step')
    parser.add_argument('--shape', type=positive_int, nargs=2, default=shape, metavar=('H', 'W'), help='input size')
    parser.add_argument('--warmup', type=non_negative_int, default=warmup, help='untimed steps first')
    parser.add_argument('--repeats', type=positive_int, default=repeats, help='timed steps (median reported)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write every figure as json (atomically)')


def add_switches(parser: argparse.ArgumentParser, default: List[str]) -> None:
    """``--switches``: one run (or row) per entry, each a set of tools/train.py's switches."""
    names = ', '.join(n + (f'={"|".join(v)}' if v else '') for n, v in TRAIN_SWITCHES.items())
    parser.add_argument(
        '--switches',
        nargs='+',
        type=switch_entry,
        default=default,
        help="one run per entry, each tools/train.py's switches without dashes, comma-separated, of "
        f'{names}: none (the plain command), fast-train, fast-train,cuda-graphs=train, ... '
        '(default: %(default)s)')


def add_out(parser: argparse.ArgumentParser, after_every_run: bool = False) -> None:
    parser.add_argument(
        '--out', help='write every figure as json (atomically)' + (', after every run' if after_every_run else ''))


def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config')
    add_common(parser, warmup=10, repeats=30, precision='fp32')
    parser.add_argument(
        '--cuda-graphs',
        nargs='?',
        const='eval',
        choices=['eval'],
        help='replay the backbone from CUDA graphs, as tools/test.py --cuda-graphs: eval, the one mode inference '
        'uses (the default when no mode is given)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)


def backbone_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', nargs='+', default=['t'], choices=ARCHS, help='one or more archs')
    parser.add_argument(
        '--fast-path',
        nargs='+',
        default=list(backbone.FAST_PATHS),
        choices=backbone.FAST_PATHS,
        help="MAViT's fast_path values to time; 'off' (plain PyTorch) is always timed as the baseline")
    parser.add_argument(
        '--cuda-graphs',
        nargs='?',
        const='all',
        choices=['eval', 'train', 'all'],
        help="add rows of fast_path='auto' replayed from CUDA graphs of this mode (default when given "
        'alone: all)')
    parser.add_argument(
        '--with-cp',
        nargs='+',
        default=[],
        metavar='PARTS',
        help='also time the training step with with_cp=[PARTS] (comma-separated parts of '
        'block, ffn, stem), e.g. --with-cp ffn ffn,stem')
    parser.add_argument('--settings', nargs='+', default=list(backbone.SETTINGS), choices=list(backbone.SETTINGS))
    parser.add_argument(
        '--peers',
        nargs='*',
        default=list(backbone.DEFAULT_PEERS),
        help='peer backbones by name (`--peers` alone: none; `--peers all`: every installed one)')
    parser.add_argument(
        '--profile',
        type=non_negative_int,
        default=0,
        metavar='N',
        help='profile N more steps per model: GPU busy, kernel launches, the most launched kernels (0: none)')
    parser.add_argument('--sweep', help='also run the attention sweep and draw it to this PNG')
    parser.add_argument('--sweep-sizes', type=int, nargs='+', default=[256, 512, 1024, 1536, 2048])
    add_common(parser)


def train_iter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('configs', nargs='+')
    add_common(parser, shape=(800, 1344), batch_size=2, precision=None)
    add_switches(parser, ['none'])
    parser.add_argument(
        '--profile', type=non_negative_int, default=0, metavar='N', help='profile N more steps per config (0: none)')


def memory_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', default='t', choices=ARCHS)
    parser.add_argument(
        '--fast-path',
        nargs='+',
        default=['off', 'auto'],
        choices=['off', 'auto'],
        help="MAViT's fast_path values to account ('off': plain PyTorch)")
    parser.add_argument(
        '--with-cp',
        nargs='+',
        default=['none'],
        choices=memory.WITH_CP,
        help='recomputed parts to account for each fast path (none: keep everything)')
    parser.add_argument('--top', type=int, default=25, help='rows to print (all go to --out)')
    add_common(parser, shape=(800, 1344), batch_size=2, precision='fp32')


def onnx_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', default='t', choices=ARCHS)
    parser.add_argument(
        '--providers', nargs='+', help='onnxruntime execution providers (default: every local one installed)')
    parser.add_argument('--ort-repeats', type=positive_int, default=5, help='timed onnxruntime runs per provider')
    add_common(parser, shape=(512, 2048), batch_size=1, warmup=10, repeats=30)


def runner_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'configs',
        nargs='*',
        default=[osp.join(runner.ROOT, c) for c in runner.TOY_CONFIGS],
        help=f'default: {" ".join(runner.TOY_CONFIGS)}')
    parser.add_argument(
        '--toy-root', default=osp.join(runner.ROOT, 'data', 'toy'), help='the toy data (made if absent)')
    parser.add_argument(
        '--toy-images', type=positive_int, default=160, help='training images of the toy data (default: %(default)s)')
    parser.add_argument('--epochs', type=positive_int, default=1, help='epochs of an epoch-based config')
    parser.add_argument('--iters', type=positive_int, default=100, help='iterations of an iteration-based config')
    parser.add_argument('--warmup', type=non_negative_int, default=5, help='logged iterations left out')
    add_switches(parser, ['none', 'fast-train'])
    parser.add_argument('--amp', action='store_true', help='tools/train.py --amp (CUDA)')
    add_out(parser)


def real_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'configs',
        nargs='*',
        default=list(real_run.DEFAULT_CONFIGS),
        help=f'default: {" ".join(real_run.DEFAULT_CONFIGS)}')
    parser.add_argument(
        '--data', default=osp.join(real_run.ROOT, 'data', 'bench'), help='the generated data (made if absent)')
    parser.add_argument('--iters', type=positive_int, default=150, help='training iterations per run')
    parser.add_argument('--warmup', type=non_negative_int, default=40, help='iterations before the steady state')
    add_switches(parser, ['none'])  # each beside --amp; none: the README command
    parser.add_argument('--test-images', type=non_negative_int, default=60, help='images tested (0: no test run)')
    parser.add_argument('--triton-cache', help='TRITON_CACHE_DIR of the runs (default: a new empty folder)')
    parser.add_argument('--logs', help="folder for the runs' output (default: a new temporary one, printed)")
    parser.add_argument(
        '--profile',
        type=non_negative_int,
        default=0,
        metavar='N',
        help='after the timed iterations, profile N more (tools/train.py --profile): where the time goes per part')
    add_out(parser, after_every_run=True)


def cold_start_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', default='t', choices=ARCHS)
    parser.add_argument('--shape', type=positive_int, nargs=2, default=(800, 1216), metavar=('H', 'W'))
    add_out(parser)


def shapes_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--sizes', type=positive_int, default=10, help='new input sizes per row')
    parser.add_argument('--plain-convs', action='store_true', help="add MAViT-T with the blocks' convs on cuDNN")
    parser.add_argument(
        '--tables',
        nargs='+',
        choices=['ops', 'backbones', 'necks', 'profile'],
        default=['ops', 'backbones', 'necks'],
        help='which tables: per operation, per backbone step, per detector neck and head; profile: where a new '
        "size's host time goes in MAViT's training step (per operator)")
    parser.add_argument('--arch', default='t', choices=ARCHS, help='the MAViT of the profile table')
    parser.add_argument('--device', default='cuda')
    add_out(parser)


def launches_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', nargs='+', default=['t', 's'], choices=ARCHS)
    parser.add_argument('--shape', type=positive_int, nargs=2, default=(224, 320), metavar=('H', 'W'))
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help="CUDA, or a CPU (the fast path's kernels only with TRITON_INTERPRET=1)")
    add_out(parser)


#: subcommand -> (its measurement module, the function adding its options)
SUBCOMMANDS: Dict[str, tuple] = {
    'model': (model, model_args),
    'backbone': (backbone, backbone_args),
    'train-iter': (train_iter, train_iter_args),
    'memory': (memory, memory_args),
    'onnx': (onnxrt, onnx_args),
    'runner': (runner, runner_args),
    'real-run': (real_run, real_run_args),
    'shapes': (shapes, shapes_args),
    'cold-start': (cold_start, cold_start_args),
    'launches': (launches, launches_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{' + ','.join(SUBCOMMANDS) + '}')
    for name, (module, add_arguments) in SUBCOMMANDS.items():
        add_arguments(
            sub.add_parser(
                name,
                help=module.__doc__.split('\n')[0].split(': ', 1)[-1],
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    run: Callable[[argparse.Namespace], dict] = SUBCOMMANDS[args.command][0].run
    try:
        result = run(args)
    except UsageError as e:
        parser.error(f'{args.command}: {e}')
    if args.out:
        write_text_atomic(json.dumps(result, indent=2, default=str) + '\n', args.out)
        print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
