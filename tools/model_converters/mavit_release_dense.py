"""Convert a release detection / segmentation checkpoint of MAViT (mmdet 2.x / mmseg 0.x) for our configs.

    python tools/model_converters/mavit_release_dense.py maskrcnn_t_1x.pth \
        configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py work_dirs/mask-rcnn_mavit-t_release.pth
    python tools/test.py configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py work_dirs/mask-rcnn_mavit-t_release.pth

Builds the config's model and maps every tensor of the release file onto it: the backbone keys are already
ours, and the RetinaNet / Mask R-CNN / Cascade / FPN / UperNet modules kept their names from mmdet 2.x to
3.x and mmseg 0.x to 1.x, so the mapping is by name (after dropping a DDP "module." prefix); RENAMES
holds the exceptions. Every key that maps to nothing, every model tensor left without a value and every
shape that differs is reported; the output is written only when all map (or with --allow-partial).
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import List, Tuple

import torch
from mmengine.config import Config

from mavit_mm.config.run_config import build_model
from mavit_mm.models.pretrained import extract_state_dict
from mavit_mm.utils.fileio import save_atomic

# (regex on the release key, replacement): names that changed between the release's libraries and ours.
RENAMES: List[Tuple[str, str]] = []


def map_keys(state: dict) -> OrderedDict:
    out = OrderedDict()
    for key, value in state.items():
        for pattern, repl in RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='release checkpoint (mmdet 2.x / mmseg 0.x)')
    parser.add_argument('config', help='our config the checkpoint is for')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--allow-partial', action='store_true', help='write even if keys do not all map')
    args = parser.parse_args()
    if osp.abspath(args.src) == osp.abspath(args.dst):
        raise ValueError('dst must differ from src: the release file is never overwritten')

    cfg = Config.fromfile(args.config)  # runs custom_imports
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    own = model.state_dict()
    state = map_keys(extract_state_dict(torch.load(args.src, map_location='cpu', weights_only=True)))

    unmapped = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    mismatched = [
        f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}' for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    for title, items in (('keys of the release file that map to nothing',
                          unmapped), ('model tensors the release file does not provide', missing),
                         ('shapes that differ (release vs model)', mismatched)):
        if items:
            print(f'{title} ({len(items)}):\n  ' + '\n  '.join(items[:20]))
    print(f'{len(state) - len(unmapped) - len(mismatched)} of {len(own)} model tensors mapped')
    if (unmapped or missing or mismatched) and not args.allow_partial:
        print('nothing written: fix the config (arch, num_classes) or pass --allow-partial', file=sys.stderr)
        return 1
    keep = OrderedDict((k, v) for k, v in state.items() if k in own and v.shape == own[k].shape)
    save_atomic(
        {
            'state_dict': keep,
            'meta': {
                'converted_from': osp.basename(args.src),
                'config': osp.basename(args.config)
            }
        }, args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
