"""Write a config that inherits a stock mmdet / mmseg config and puts MAViT in as its backbone.

    python tools/misc/swap_backbone.py mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py --arch tiny \
        --out configs_local/faster-rcnn_mavit-t_fpn_1x_coco.py
    python tools/misc/swap_backbone.py mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py \
        --arch small --out my_configs/deeplabv3plus_mavit-s_ade20k.py

The new config changes only what the swap needs: the backbone (MAViT, the stock out_indices,
SyncBN, ImageNet weights from --checkpoint), the in_channels of the neck or of the heads that read
the backbone, ``custom_imports``, and the optimizer MAViT wants (AdamW, no weight decay on norms
and layer scales; --keep-optimizer keeps the stock optimizer, adding only the no-decay keys).
The model is built and run once on a small image before the file is written.
"""
import argparse
import sys

from mmengine.config import Config

from mavit_mm.config.backbone_swap import render_config, swap_backbone
from mavit_mm.config.run_config import build_model, load_config
from mavit_mm.models.backbones.mavit import MAViT
from mavit_mm.utils.fileio import write_text_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help="stock config: a path or 'mmdet::...' / 'mmseg::...'")
    parser.add_argument('--arch', default='tiny', help=f'MAViT arch: {sorted(MAViT.arch_zoo)}')
    parser.add_argument('--out', required=True, help='where to write the new config (.py)')
    parser.add_argument('--checkpoint', help='ImageNet weights (default checkpoints/mavit-<a>_in1k.pth)')
    parser.add_argument(
        '--out-indices', type=int, nargs='+', help='MAViT stages to output '
        '(default: the stock backbone\'s)')
    parser.add_argument('--keep-optimizer', action='store_true')
    parser.add_argument('--no-check', action='store_true', help='skip building the new model')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.out.endswith('.py'):
        sys.exit('swap_backbone: --out must be a .py config file')
    try:
        cfg = load_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'swap_backbone: cannot read {args.config!r}: {e}')
    if 'backbone' not in cfg.get('model', {}):
        sys.exit(f'swap_backbone: {args.config} has no model.backbone to replace')
    overrides = swap_backbone(cfg, args.arch, args.checkpoint, args.out_indices, args.keep_optimizer)
    write_text_atomic(render_config(args.config, args.out, overrides), args.out)
    if not args.no_check:
        new = Config.fromfile(args.out)
        new.model.backbone.init_cfg = None
        model = build_model(new)
        print(f'built {type(model).__name__} with a MAViT-{args.arch} backbone: '
              f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
