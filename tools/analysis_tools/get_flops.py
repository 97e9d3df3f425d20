"""Params and FLOPs of a config's model, in the paper's convention and in a full count.

    python tools/analysis_tools/get_flops.py configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 512 512 --out flops.json

Default input (H, W), as the paper: 800x1280 for detection, 512x2048 for segmentation, 224x224 for
classification. "paper" counts module operations only (ptflops' module hooks: convs, linears, norms,
activations; no attention products), "full" every traced op (mmengine.analysis / fvcore, attention
products included); see mavit_mm/analysis/complexity.py. Two-stage detectors get 1000 fixed proposals.
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import DictAction

from mavit_mm.analysis.complexity import PAPER_SHAPES, model_complexity
from mavit_mm.analysis.paper import PAPER_ROWS
from mavit_mm.config.run_config import build_model, load_model_config
from mavit_mm.utils.cli_types import positive_int
from mavit_mm.utils.fileio import write_text_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument(
        '--shape',
        type=positive_int,
        nargs=2,
        metavar=('H', 'W'),
        help='input height and width (default: the paper\'s shape for the task)')
    parser.add_argument('--no-full', action='store_true', help='skip the full (traced) count, which is slower')
    parser.add_argument('--out', help='write the figures to this json file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, xxx=yyy format')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        cfg = load_model_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'get_flops: {e}')
    scope = cfg.default_scope
    shape = tuple(args.shape) if args.shape else PAPER_SHAPES[scope]
    result = model_complexity(build_model(cfg), scope, shape, full=not args.no_full)
    name = osp.splitext(osp.basename(args.config))[0]
    result = dict(config=name, **result)
    paper = PAPER_ROWS.get(name)
    if paper is not None and args.shape is None:
        result.update(paper_params_m=paper.params, paper_flops_g=paper.flops)

    print(f'config:  {name}\ninput:   1x3x{shape[0]}x{shape[1]}')
    print(f'Params:  {result["params"] / 1e6:.2f} M' +
          (f'   (paper {paper.params} M)' if 'paper_params_m' in result else ''))
    print(f'FLOPs, paper convention (module ops, ptflops):           {result["flops_paper"] / 1e9:.1f} G' +
          (f'   (paper {paper.flops} G)' if 'paper_flops_g' in result else ''))
    if result['flops_full'] is not None:
        print(f'FLOPs, full count (attention products, mmengine.analysis): '
              f'{result["flops_full"] / 1e9:.1f} G')
    if args.out:
        write_text_atomic(json.dumps(result, indent=2) + '\n', args.out)
        print(f'written to {args.out}')


if __name__ == '__main__':
    main()
