"""Show the paper's insight: attention scores of softmax, linear attention and MALA.

curves: one query against N keys, the query scaled by a = 1, 2, 4, 8 (the paper's Fig. 2): sorted scores per
attention and the ratio of highest to lowest score. Keys and query are random, or taken from a block of a
model on an image.

    python tools/analysis_tools/visualize_attention.py curves --out curves.png
    python tools/analysis_tools/visualize_attention.py curves --config CFG [--checkpoint CKPT] --image IMG \
        --stage 0 --block 1 --query 64 64 --out curves.png

map: the attention-score map of one block over an image for a few query pixels (Fig. 4 style), softmax- and
MALA-stage blocks alike; MALA's scores are computed only for the chosen queries.

    python tools/analysis_tools/visualize_attention.py map CFG [--checkpoint CKPT] --image IMG --stage 1 --block 0 \
        --query 40 60 --query 100 30 --out map.png
"""
import argparse
import os.path as osp
import sys
from typing import List, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import mmcv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mavit_mm.analysis.attention_scores import capture_attention_input  # noqa: E402
from mavit_mm.analysis.attention_scores import block_scores, scaled_query_scores, top_bottom_ratio  # noqa: E402
from mavit_mm.config.run_config import build_model  # noqa: E402

SCALES = (1, 2, 4, 8)


def load_backbone(config: str, checkpoint: str = None) -> Tuple[torch.nn.Module, dict]:
    """The MAViT backbone of a config (weights from ``checkpoint``, else random) and its preprocessing."""
    from mmengine.runner import load_checkpoint
    cfg = Config.fromfile(config)  # runs the config's custom_imports
    model_cfg = cfg.model
    if model_cfg.get('backbone') is not None:
        model_cfg.backbone.init_cfg = None
    model = build_model(cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    backbone = getattr(model, 'backbone', model)
    pre = model_cfg.get('data_preprocessor') or {}
    return backbone.eval(), dict(
        mean=pre.get('mean', [123.675, 116.28, 103.53]), std=pre.get('std', [58.395, 57.12, 57.375]))


def load_image(path: str, size: int, norm: dict) -> Tuple[np.ndarray, torch.Tensor]:
    """RGB image resized so its short side is ``size``, and its normalised ``(1, 3, H, W)`` tensor."""
    img = mmcv.imread(path, channel_order='rgb')
    img = mmcv.imrescale(img, size / min(img.shape[:2]))
    x = (img.astype(np.float32) - np.array(norm['mean'])) / np.array(norm['std'])
    return img, torch.from_numpy(x).permute(2, 0, 1)[None].float()


def token_of(pixel: Tuple[int, int], image_hw: Tuple[int, int], map_hw: Tuple[int, int]) -> int:
    """Row-major token index of the map cell holding an image pixel (y, x)."""
    y = min(int(pixel[0] * map_hw[0] / image_hw[0]), map_hw[0] - 1)
    x = min(int(pixel[1] * map_hw[1] / image_hw[1]), map_hw[1] - 1)
    return y * map_hw[1] + x


def curves(args: argparse.Namespace) -> dict:
    if args.config:
        backbone, norm = load_backbone(args.config, args.checkpoint)
        img, x = load_image(args.image, args.size, norm)
        attn, feat, _ = capture_attention_input(backbone, x, args.stage, args.block)
        qh, kh, _, _ = attn.qkvo(feat).chunk(4, dim=1)
        qh, kh = attn.split_heads(qh)[0, 0], attn.split_heads(kh)[0, 0]  # head 0: (N, d)
        q = qh[token_of(args.query, img.shape[:2], feat.shape[-2:])].detach()
        k = kh.detach()
        source = f'{osp.basename(args.config)}, stage {args.stage} block {args.block}, head 0'
    else:
        g = torch.Generator().manual_seed(args.seed)
        # Defaults keep phi(q) small and the keys close, so that MALA's scores stay positive up to a = 8,
        # where the paper's Eq. 10-12 compare ratios; with wider keys its low scores turn negative.
        q = 0.5 * torch.randn(args.dim, generator=g) + args.query_mean
        k = args.key_std * torch.randn(args.num_keys, args.dim, generator=g)
        source = f'random query, {args.num_keys} keys, d={args.dim}'
    scores = scaled_query_scores(q, k, SCALES)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ratios = {}
    for ax, (name, rows) in zip(axes, scores.items()):
        ratios[name] = top_bottom_ratio(rows).tolist()
        for a, row, r in zip(SCALES, rows, ratios[name]):
            ax.plot(torch.sort(row, descending=True).values.numpy(), label=f'a={a}  max/min={r:.3g}')
        ax.set_title({'softmax': 'softmax attention', 'linear': 'linear attention', 'mala': 'MALA'}[name])
        ax.set_xlabel('keys, sorted by score')
        ax.set_ylabel('score')
        ax.legend(fontsize=8)
    fig.suptitle(f'Scores as the query magnitude grows ({source})')
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"{'a':>4} {'softmax max/min':>16} {'linear max/min':>15} {'MALA max/min':>13}")
    for i, a in enumerate(SCALES):
        print(f"{a:>4} {ratios['softmax'][i]:>16.4g} {ratios['linear'][i]:>15.4g} {ratios['mala'][i]:>13.4g}")
    print(f'wrote {args.out}')
    return ratios


def score_map(args: argparse.Namespace) -> List[np.ndarray]:
    backbone, norm = load_backbone(args.config, args.checkpoint)
    img, x = load_image(args.image, args.size, norm)
    attn, feat, rope = capture_attention_input(backbone, x, args.stage, args.block)
    h, w = feat.shape[-2:]
    tokens = [token_of(p, img.shape[:2], (h, w)) for p in args.query]
    with torch.no_grad():
        scores = block_scores(attn, feat, rope, tokens)  # (Q, heads, N)
    maps = [s.mean(0).reshape(h, w).numpy() for s in scores]  # mean over heads
    kind = 'MALA' if type(attn).__name__ == 'MALAttention' else 'softmax'
    fig, axes = plt.subplots(1, len(maps), figsize=(4.5 * len(maps), 4.5), squeeze=False)
    for ax, m, (py, px) in zip(axes[0], maps, args.query):
        heat = mmcv.imresize(m.astype(np.float32), (img.shape[1], img.shape[0]), interpolation='nearest')
        ax.imshow(img)
        ax.imshow(heat, cmap='jet', alpha=0.5)
        ax.scatter([px], [py], s=80, c='white', edgecolors='black', marker='*')
        ax.set_title(f'stage {args.stage} block {args.block} ({kind}), query ({py}, {px})', fontsize=9)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    for (py, px), m in zip(args.query, maps):
        print(f'query ({py}, {px}): {h}x{w} scores, sum {m.sum():.4f}, max {m.max():.4g}, min {m.min():.4g}')
    print(f'wrote {args.out}')
    return maps


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='mode', required=True)
    c = sub.add_parser('curves', help='scores as the query magnitude grows (Fig. 2)')
    c.add_argument('--num-keys', type=int, default=64)
    c.add_argument('--dim', type=int, default=32)
    c.add_argument('--seed', type=int, default=0)
    c.add_argument('--query-mean', type=float, default=-3.0, help='mean of the random query entries')
    c.add_argument('--key-std', type=float, default=0.3, help='spread of the random key entries')
    c.add_argument('--config', help='take the query and keys from this model instead of random ones')
    m = sub.add_parser('map', help='attention-score maps of one block over an image (Fig. 4)')
    m.add_argument('config')
    for p in (c, m):
        p.add_argument('--checkpoint', help='weights (default: random)')
        p.add_argument('--image', help='image file (map, or curves with --config)')
        p.add_argument('--size', type=int, default=256, help='short side the image is resized to')
        p.add_argument('--stage', type=int, default=0)
        p.add_argument('--block', type=int, default=0)
        p.add_argument('--out', required=True, help='PNG to write')
    c.add_argument('--query', type=int, nargs=2, default=(64, 64), metavar=('Y', 'X'))
    m.add_argument(
        '--query',
        type=int,
        nargs=2,
        action='append',
        required=True,
        metavar=('Y', 'X'),
        help='a query pixel of the resized image; repeat for several')
    args = parser.parse_args(argv)
    if (args.mode == 'map' or args.config) and not args.image:
        parser.error('--image is needed to take scores from a model')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    curves(args) if args.mode == 'curves' else score_map(args)


if __name__ == '__main__':
    main(sys.argv[1:])
