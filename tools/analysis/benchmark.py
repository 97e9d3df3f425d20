"""Inference throughput of a config's model, as the paper measured it.

    python tools/analysis/benchmark.py configs/imagenet/mavit-t_8xb128_in1k.py          # 224x224, batch 64
    python tools/analysis/benchmark.py configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py --amp
    python tools/analysis/benchmark.py CONFIG --shape 128 128 --batch-size 2 --repeats 3  # quick, on CPU

Defaults as the paper's figures: classification 224x224 batch 64 (Fig. 5), segmentation 512x2048
batch 1 (Fig. 6), detection 800x1280 batch 1. The model runs in eval mode, ``mode='tensor'`` (raw
head outputs, no post-processing; two-stage detectors get 1000 fixed proposals), random weights,
under ``torch.no_grad``. Prints the median of the repeats after warm-up, images/s, peak memory
(CUDA), and the device and versions.
"""
import argparse
import json
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

from mavit_mm.analysis.benchmarking import environment, measure
from mavit_mm.analysis.complexity import PAPER_SHAPES, TensorForward, dummy_data_samples
from mavit_mm.utils.config_tools import build_model, load_model_config
from mavit_mm.utils.fileio import write_text_atomic

BATCH_SIZES = {'mmpretrain': 64, 'mmseg': 1, 'mmdet': 1}  # Fig. 5: batch 64; Fig. 6: batch 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='input size')
    parser.add_argument('--batch-size', type=int, help='images per forward')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast (fp16 with --fp16)')
    parser.add_argument('--fp16', action='store_true')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--out', help='write the result as json')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        cfg = load_model_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'benchmark: {e}')
    scope = cfg.default_scope
    shape = tuple(args.shape) if args.shape else PAPER_SHAPES[scope]
    batch = args.batch_size or BATCH_SIZES[scope]
    device = torch.device(args.device)
    model = build_model(cfg).to(device).eval()
    two_stage = scope == 'mmdet' and getattr(model, 'with_rpn', False)
    samples = dummy_data_samples(scope, shape, two_stage)
    if samples is not None:
        samples = [s.to(device) for s in samples] * batch
    wrapped = TensorForward(model, samples)
    inputs = torch.randn(batch, 3, *shape, device=device)
    dtype = torch.float16 if args.fp16 else torch.bfloat16

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=args.amp or args.fp16):
            return wrapped(inputs)

    result = measure(step, device, args.warmup, args.repeats)
    result.update(config=osp.splitext(osp.basename(args.config))[0], shape=list(shape), batch_size=batch,
                  precision=('fp16' if args.fp16 else 'bf16') + ' autocast' if args.amp or args.fp16
                  else 'fp32', images_per_s=batch / (result['median_ms'] / 1e3), env=environment())
    for k, v in result['env'].items():
        print(f'# {k}: {v}')
    print(f'{result["config"]}: batch {batch} x 3 x {shape[0]} x {shape[1]}, {result["precision"]}, '
          f'{args.device}')
    line = f'median {result["median_ms"]:.2f} ms (min {result["min_ms"]:.2f}, max {result["max_ms"]:.2f}, ' \
           f'{args.repeats} repeats after {args.warmup} warm-up), {result["images_per_s"]:.1f} img/s'
    if 'peak_mem_mib' in result:
        line += f', peak memory {result["peak_mem_mib"]:.0f} MiB'
    print(line)
    if args.out:
        write_text_atomic(json.dumps(result, indent=2) + '\n', args.out)


if __name__ == '__main__':
    main()
