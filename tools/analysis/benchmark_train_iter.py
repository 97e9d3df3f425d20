"""Training-iteration time of mmdet configs on one GPU, side by side in one run.

    python tools/analysis/benchmark_train_iter.py configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py \
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --amp --out iter.json

Each config's own model and optimizer wrapper (``optim_wrapper``; ``--amp`` makes it the
``AmpOptimWrapper`` of ``tools/train.py --amp`` for every config alike: fp16, dynamic loss scale, since
mmcv 2.1's CUDA RoIAlign has no bf16 kernel), random backbone weights, SyncBN as BN, on a fixed
synthetic batch (``--batch-size`` images of ``--shape``, 10 boxes with masks each, mmdet's
``demo_mm_inputs``): ``model.train_step`` as the Runner calls it. Median of ``--repeats`` after
``--warmup`` iterations, peak memory, device and versions.
"""
import argparse
import json
import os.path as osp

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mavit_mm.analysis.benchmarking import environment, measure
from mavit_mm.utils.config_tools import build_model, load_model_config
from mavit_mm.utils.fileio import write_text_atomic


def prepare(config: str, amp: bool, device: torch.device):
    cfg = load_model_config(config)
    backbone = cfg.model.backbone
    if backbone.get('norm_cfg', {}).get('type') == 'SyncBN':
        backbone.norm_cfg = dict(backbone.norm_cfg, type='BN')
    model = build_model(cfg).to(device).train()
    optim_cfg = cfg.optim_wrapper.copy()
    if amp:
        optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
        optim_cfg.pop('dtype', None)
    elif device.type == 'cpu' and optim_cfg.get('type') == 'AmpOptimWrapper':
        optim_cfg.type = 'OptimWrapper'  # mmengine's AMP wrapper needs a GPU
        optim_cfg.pop('loss_scale', None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    return cfg, model, optim_wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1344), metavar=('H', 'W'))
    parser.add_argument('--amp', action='store_true',
                        help='fp16 AmpOptimWrapper (dynamic loss scale) for every config, as tools/train.py --amp')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--out')
    args = parser.parse_args()
    from mmdet.testing import demo_mm_inputs
    device = torch.device(args.device)
    env = environment()
    print('\n'.join(f'# {k}: {v}' for k, v in env.items()))
    packed = demo_mm_inputs(batch_size=args.batch_size, image_shapes=[(3, *args.shape)] * args.batch_size,
                            num_items=[10] * args.batch_size, with_mask=True)
    rows = []
    for config in args.configs:
        cfg, model, optim_wrapper = prepare(config, args.amp, device)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            def step(model=model, optim_wrapper=optim_wrapper):
                return model.train_step(packed, optim_wrapper)
            r = measure(step, device, args.warmup, args.repeats)
        r.update(config=osp.splitext(osp.basename(config))[0], batch_size=args.batch_size,
                 shape=list(args.shape), precision='fp16 amp' if args.amp else 'config')
        rows.append(r)
        print(f'{r["config"]:55s} {r["median_ms"]:8.1f} ms/iter'
              + (f'  peak {r["peak_mem_mib"]:.0f} MiB' if 'peak_mem_mib' in r else ''), flush=True)
        del model, optim_wrapper
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    if args.out:
        write_text_atomic(json.dumps(dict(env=env, rows=rows), indent=2) + '\n', args.out)


if __name__ == '__main__':
    main()
