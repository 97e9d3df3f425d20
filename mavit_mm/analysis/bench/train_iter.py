"""``benchmark.py train-iter CONFIG [CONFIG ...]``: training-iteration time of mmdet / mmseg configs, side by side.

Each config's own model and optimizer wrapper (``optim_wrapper``; ``--precision`` replaces it for every
config alike: ``fp16`` / ``bf16`` an ``AmpOptimWrapper`` as ``tools/train.py --amp`` (dynamic loss scale),
``fp32`` a plain ``OptimWrapper``), random backbone weights, SyncBN as BN, on a fixed synthetic batch
(``--batch-size`` images of ``--shape``; detectors: 10 boxes with uint8 masks each, mmdet's ``demo_mm_inputs``;
segmentors: random label maps, their data preprocessor's pad size set to ``--shape``; with ``--fast-train``
its images pinned, as the dataloader then delivers them): ``model.train_step`` as the Runner calls it.

``--switches`` gives one row per config and entry, each entry tools/train.py's switches: ``fast-train``
measures the config through :func:`mavit_mm.engine.apply_fast_train` (what ``tools/train.py --fast-train``
does), ``cuda-graphs=train`` with its backbone replayed from CUDA graphs in training (what
``tools/train.py --cuda-graphs train`` does; fixed input shape; CUDA only). ``--profile N`` adds, per
config, a ``torch.profiler`` summary of N more steps: GPU-busy time, kernel launches, synchronisations,
the host's time waiting on the GPU, host-to-device copies, the top host-side operators, and the same per
phase of the step (data preprocessor, backbone, neck, each head's loss, backward, optimizer step).
"""
import argparse
import contextlib
import os.path as osp
from typing import List, Tuple

import numpy as np
import torch

from ..benchmarking import environment, measure, phases, profile_steps
from . import UsageError, check_device, no_tf32, parse_switch, print_env, print_profile


def _prepare(config: str, precision, device: torch.device, shape: Tuple[int, int], fast: bool = False):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    from mavit_mm.config.run_config import build_model, load_model_config
    cfg = load_model_config(config)
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('size') is not None:  # mmseg's pads every batch to its crop size: time --shape instead
        preprocessor['size'] = tuple(shape)
    if fast:
        from mavit_mm.engine.fast_train import apply_fast_train
        apply_fast_train(cfg, cuda=device.type == 'cuda')
    backbone = cfg.model.get('backbone', {})
    if backbone.get('norm_cfg', {}).get('type') == 'SyncBN':
        backbone.norm_cfg = dict(backbone.norm_cfg, type='BN')
    model = build_model(cfg).to(device).train()
    optim_cfg = cfg.optim_wrapper.copy()
    if precision in ('fp16', 'bf16'):
        optim_cfg.update(
            type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16' if precision == 'fp16' else 'bfloat16')
    elif precision == 'fp32' or (device.type == 'cpu' and optim_cfg.get('type') == 'AmpOptimWrapper'):
        optim_cfg.type = 'OptimWrapper'  # mmengine's AMP wrapper needs a GPU
        for key in ('loss_scale', 'dtype'):
            optim_cfg.pop(key, None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    return cfg, model, optim_wrapper


def synthetic_batch(scope: str, batch: int, shape, pin_memory: bool = False) -> dict:
    """A fixed training batch as the data preprocessor receives it; with ``pin_memory`` its images in
    pinned memory, as a dataloader with ``pin_memory=True`` delivers them (``--fast-train`` sets that)."""
    packed = _synthetic_batch(scope, batch, shape)
    if pin_memory:
        packed['inputs'] = [x.pin_memory() for x in packed['inputs']]
    return packed


def _synthetic_batch(scope: str, batch: int, shape) -> dict:
    if scope == 'mmdet':
        from mmdet.structures.mask import BitmapMasks
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(
            batch_size=batch, image_shapes=[(3, *shape)] * batch, num_items=[10] * batch, with_mask=True)
        for sample in packed['data_samples']:  # uint8, as LoadAnnotations decodes them (the demo's are float64)
            masks = sample.gt_instances.masks
            sample.gt_instances.masks = BitmapMasks(masks.masks.astype(np.uint8), masks.height, masks.width)
        return packed
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        s = SegDataSample(metainfo=dict(img_shape=tuple(shape), ori_shape=tuple(shape), pad_shape=tuple(shape)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, *shape), generator=g))
        samples.append(s)
    return dict(
        inputs=[torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=g) for _ in range(batch)],
        data_samples=samples)


def row_variants(switches: List[str]) -> List[Tuple[bool, bool]]:
    """``(fast_train, cuda_graphs)`` of each ``--switches`` entry; a training step replays graphs only in
    training, so ``cuda-graphs`` must be ``train`` (or ``all``)."""
    variants = []
    for entry in switches:
        parsed = parse_switch(entry)
        if parsed.get('cuda-graphs') == 'eval':
            raise ValueError(f'{entry!r}: train-iter times training steps; use cuda-graphs=train')
        variants.append(('fast-train' in parsed, 'cuda-graphs' in parsed))
    return variants


def run(args: argparse.Namespace) -> dict:
    from mmengine.registry import DefaultScope
    device = check_device(args.device)
    try:
        variants = row_variants(args.switches)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if any(graphs for _, graphs in variants) and device.type != 'cuda':
        raise UsageError('cuda-graphs replays CUDA graphs: it needs --device cuda')
    for config in args.configs:
        if not config.startswith(('mmdet::', 'mmseg::')) and not osp.isfile(config):
            raise UsageError(f'config {config} not found')
    env = environment()
    print_env(env)
    rows: List[dict] = []
    for config, (fast, graphs) in [(c, v) for c in args.configs for v in variants]:
        cfg, model, optim_wrapper = _prepare(config, args.precision, device, tuple(args.shape), fast)
        if graphs:
            from mavit_mm.engine import enable_cuda_graphs
            enable_cuda_graphs(model.backbone, 'train')
        packed = synthetic_batch(
            cfg.default_scope, args.batch_size, args.shape, pin_memory=fast and device.type == 'cuda')
        exact = no_tf32() if args.precision == 'fp32' else contextlib.nullcontext()
        with DefaultScope.overwrite_default_scope(cfg.default_scope), exact:

            def step(model=model, optim_wrapper=optim_wrapper):
                return model.train_step(packed, optim_wrapper)

            r = measure(step, device, args.warmup, args.repeats, settle=3 if graphs else 1)
            if args.profile:
                with phases(model, optim_wrapper) as labels:
                    r['profile'] = profile_steps(step, device, args.profile, labels=labels)
        r.update(
            config=osp.splitext(osp.basename(config))[0] + (' [fast-train]' if fast else '') +
            (' [graphs]' if graphs else ''),
            cuda_graphs=graphs,
            fast_train=fast,
            batch_size=args.batch_size,
            shape=list(args.shape),
            precision=args.precision or 'config')
        rows.append(r)
        print(
            f'{r["config"]:55s} {r["median_ms"]:8.1f} ms/iter' +
            (f'  peak {r["peak_mem_mib"]:.0f} MiB' if 'peak_mem_mib' in r else ''),
            flush=True)
        if 'profile' in r:
            print_profile(r['profile'])
        del model, optim_wrapper
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return dict(env=env, rows=rows)
