"""Convert a release ImageNet checkpoint of MAViT (qhfan/MALA, classification) for OpenMMLab.

    # backbone-only weights for detection / segmentation init_cfg (keys "backbone.*", the mmengine way)
    python tools/model_converters/mavit_release_cls.py mavit_t.pth checkpoints/mavit-t_in1k.pth --to backbone
    # the same without the prefix (a plain MAViT state dict)
    python tools/model_converters/mavit_release_cls.py mavit_t.pth mavit-t_plain.pth --to backbone --no-prefix
    # a full mmpretrain ImageClassifier checkpoint for configs/imagenet (tools/test.py can evaluate it)
    python tools/model_converters/mavit_release_cls.py mavit_t.pth mavit-t_in1k_mmpretrain.pth --to mmpretrain

The release's ImageNet file holds {'model': state_dict, ...}; backbone keys are already MAViT's
(patch_embed.*, layers.*), the head is proj.*, norm.*, head.*. (The backbone's init_cfg also loads the
release file as it is; converting once avoids carrying the head around and documents the weights.)
"""
import argparse
import os.path as osp
from collections import OrderedDict

import torch

from mavit_mm.models.pretrained import CLS_HEAD_PREFIXES, extract_state_dict
from mavit_mm.utils.fileio import save_atomic


def convert(state: dict, to: str, prefix: bool = True) -> OrderedDict:
    """Map a release classification state dict to backbone-only or ImageClassifier keys."""
    backbone = OrderedDict((k, v) for k, v in state.items() if not k.startswith(CLS_HEAD_PREFIXES))
    head = OrderedDict((k, v) for k, v in state.items() if k.startswith(CLS_HEAD_PREFIXES))
    unknown = [k for k in backbone if not k.startswith(('patch_embed.', 'layers.'))]
    if unknown:
        raise ValueError(f'not a MAViT classification checkpoint: unexpected keys {unknown[:5]}')
    if not head and to == 'mmpretrain':
        raise ValueError('the checkpoint has no classification head (proj.*, norm.*, head.*)')
    if to == 'backbone':
        return OrderedDict(((f'backbone.{k}' if prefix else k), v) for k, v in backbone.items())
    out = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    out.update((f'head.{k}', v) for k, v in head.items())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='release ImageNet checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--to', choices=['backbone', 'mmpretrain'], default='backbone')
    parser.add_argument('--no-prefix', action='store_true', help='backbone keys without "backbone."')
    args = parser.parse_args()
    if osp.abspath(args.src) == osp.abspath(args.dst):
        raise ValueError('dst must differ from src: the release file is never overwritten')
    state = extract_state_dict(torch.load(args.src, map_location='cpu'))
    converted = convert(state, args.to, prefix=not args.no_prefix)
    save_atomic({'state_dict': converted, 'meta': {'converted_from': osp.basename(args.src)}}, args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
