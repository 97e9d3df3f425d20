"""Count negative MALA attention scores of a model's checkpoints on a folder of images.

    python tools/analysis_tools/count_negative_scores.py configs/toy/mavit-t_toy-cls.py \
        work_dirs/toy_cls/epoch_*.pth --images data/toy/cls/val --max-images 8 --out neg.json

For every checkpoint, every MALA block, every image: all N x N scores (exact, in float64, a chunk
of queries at a time); prints the negative count and share, and the lowest score. The paper notes
that scores can in theory go negative (the rotary encoding rotates phi(q) and phi(k)).
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List

import mmcv
import torch
from mmengine.runner import load_checkpoint

from mavit_mm.analysis.attention_scores import negative_score_stats
from mavit_mm.config.run_config import build_model, load_model_config
from mavit_mm.models.layers import MALAttention
from mavit_mm.utils.fileio import write_text_atomic


def load_images(folder: str, limit: int, size: int) -> List[torch.Tensor]:
    """Up to ``limit`` images as uint8 ``(3, size, size)`` BGR tensors, as LoadImageFromFile reads them."""
    paths = sorted(
        p for p in glob.glob(osp.join(folder, '**', '*.*'), recursive=True)
        if p.lower().endswith(('.jpg', '.jpeg', '.png')))[:limit]
    if not paths:
        sys.exit(f'count_negative_scores: no .jpg/.png images under {folder}')
    return [
        torch.from_numpy(mmcv.imresize(mmcv.imread(path), (size, size))).permute(2, 0, 1).contiguous() for path in paths
    ]


@torch.no_grad()
def count(model: torch.nn.Module, images: List[torch.Tensor]) -> Dict[str, float]:
    """Negative scores of every MALA block of ``model.backbone`` over ``images``; the images are
    normalised by the model's own data preprocessor (mean, std, channel order of the config)."""
    captured = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: captured.append((m, args[0], args[1])))
        for m in model.backbone.modules() if isinstance(m, MALAttention)
    ]
    totals = {'negative': 0, 'total': 0, 'min': float('inf')}
    try:
        for image in images:
            captured.clear()
            model.backbone(model.data_preprocessor(dict(inputs=[image]), False)['inputs'])
            for attn, x, rope in captured:
                s = negative_score_stats(attn, x, rope)
                totals['negative'] += s['negative']
                totals['total'] += s['total']
                totals['min'] = min(totals['min'], s['min'])
    finally:
        for h in hooks:
            h.remove()
    totals['share'] = totals['negative'] / max(1, totals['total'])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoints', nargs='+')
    parser.add_argument('--images', required=True, help='folder of images (searched recursively)')
    parser.add_argument('--max-images', type=int, default=8)
    parser.add_argument('--size', type=int, default=96, help='images are resized to size x size')
    parser.add_argument('--out', help='write the figures as json')
    args = parser.parse_args()
    try:
        cfg = load_model_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'count_negative_scores: {e}')
    images = load_images(args.images, args.max_images, args.size)
    rows = []
    print('| checkpoint | MALA scores | negative | share | lowest score |\n|---|---|---|---|---|')
    for ckpt in args.checkpoints:
        model = build_model(cfg).eval()
        load_checkpoint(model, ckpt, map_location='cpu', logger='silent')
        r = dict(checkpoint=osp.basename(ckpt), **count(model, images))
        rows.append(r)
        print(
            f'| {r["checkpoint"]} | {r["total"]:,} | {r["negative"]:,} | {100 * r["share"]:.4f} % | '
            f'{r["min"]:.3e} |',
            flush=True)
    if args.out:
        write_text_atomic(json.dumps(rows, indent=2) + '\n', args.out)


if __name__ == '__main__':
    main()
