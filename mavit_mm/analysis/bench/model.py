"""``benchmark.py model CONFIG``: inference throughput of a config's whole model, as the paper measured it.

Defaults as the paper's figures: classification 224x224 batch 64 (Fig. 5), segmentation 512x2048
batch 1 (Fig. 6), detection 800x1280 batch 1. The model runs in eval mode, ``mode='tensor'`` (raw
head outputs, no post-processing; two-stage detectors get 1000 fixed proposals), random weights,
under ``torch.no_grad``. ``--cuda-graphs`` replays the backbone from CUDA graphs, as ``tools/test.py
--cuda-graphs`` does.
"""
import argparse
import os.path as osp

import torch

from ..benchmarking import environment, measure
from ..complexity import PAPER_SHAPES, TensorForward, dummy_data_samples
from . import UsageError, autocast, check_device, print_env

BATCH_SIZES = {'mmpretrain': 64, 'mmseg': 1, 'mmdet': 1}  # Fig. 5: batch 64; Fig. 6: batch 1


def run(args: argparse.Namespace) -> dict:
    from mavit_mm.config.run_config import build_model, load_model_config
    device = check_device(args.device)
    if args.cuda_graphs and device.type != 'cuda':
        raise UsageError('--cuda-graphs replays CUDA graphs: it needs --device cuda')
    try:
        cfg = load_model_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    scope = cfg.default_scope
    shape = tuple(args.shape) if args.shape else PAPER_SHAPES[scope]
    batch = args.batch_size or BATCH_SIZES[scope]
    env = environment()
    print_env(env)
    model = build_model(cfg).to(device).eval()
    if args.cuda_graphs:
        from mavit_mm.engine import enable_cuda_graphs
        enable_cuda_graphs(model.backbone, 'eval')
    two_stage = scope == 'mmdet' and getattr(model, 'with_rpn', False)
    samples = dummy_data_samples(scope, shape, two_stage)
    if samples is not None:
        samples = [s.to(device) for s in samples] * batch
    wrapped = TensorForward(model, samples)
    inputs = torch.randn(batch, 3, *shape, device=device)

    def step():
        with torch.no_grad(), autocast(device, args.precision):
            return wrapped(inputs)

    result = measure(step, device, args.warmup, args.repeats)
    result.update(
        config=osp.splitext(osp.basename(args.config))[0],
        shape=list(shape),
        batch_size=batch,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
        images_per_s=batch / (result['median_ms'] / 1e3),
        env=env)
    print(f'{result["config"]}: batch {batch} x 3 x {shape[0]} x {shape[1]}, {args.precision}, {device}'
          f'{", backbone from CUDA graphs" if args.cuda_graphs else ""}')
    line = f'median {result["median_ms"]:.2f} ms (min {result["min_ms"]:.2f}, max {result["max_ms"]:.2f}, ' \
           f'{args.repeats} repeats after {args.warmup} warm-up), {result["images_per_s"]:.1f} img/s'
    if 'peak_mem_mib' in result:
        line += f', peak memory {result["peak_mem_mib"]:.0f} MiB'
    print(line)
    return result
