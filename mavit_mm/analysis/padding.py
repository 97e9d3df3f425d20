"""How much padding a batch to a coarser shape changes a backbone's features at the image's own pixels.

mmdet pads a batch to a multiple of 32; :class:`~mavit_mm.engine.shape_buckets.BatchShapeBucketPad` pads
further. A convolution sees the extra zeros only within its receptive field of the border, but MALA's
attention averages over every token of the map, so every feature moves. :func:`feature_change` measures it:
the same image through the same backbone, padded to multiples of ``base`` and of ``divisor``, compared per
output stage over the region the image itself covers (``tools/analysis_tools/padding_effect.py``).
"""
import math
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(x: Tensor, divisor: int) -> Tensor:
    """``x`` of shape ``(N, C, H, W)`` zero-padded at the bottom and right to multiples of ``divisor``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, math.ceil(w / divisor) * divisor - w, 0, math.ceil(h / divisor) * divisor - h))


@torch.no_grad()
def feature_change(backbone: nn.Module, image: Tensor, base: int = 32, divisor: int = 160) -> List[float]:
    """Per output of ``backbone`` (a tensor or a sequence of ``(N, C, h, w)`` maps): ``||a - b|| / ||a||`` over
    the image's own region, where ``a`` is the output for ``image`` (``(N, 3, H, W)``) padded to multiples of
    ``base`` and ``b`` for it padded to multiples of ``divisor``. Each output's region is ``ceil(H / s)`` x
    ``ceil(W / s)``, its stride ``s`` read from ``a``'s size against the ``base``-padded input."""
    x_base, x_coarse = pad_to_multiple(image, base), pad_to_multiple(image, divisor)
    outs_a, outs_b = backbone(x_base), backbone(x_coarse)
    if isinstance(outs_a, Tensor):
        outs_a, outs_b = (outs_a, ), (outs_b, )
    h, w = image.shape[-2:]
    changes = []
    for a, b in zip(outs_a, outs_b):
        stride = x_base.shape[-2] / a.shape[-2]
        rh, rw = math.ceil(h / stride), math.ceil(w / stride)
        a, b = a[..., :rh, :rw].double(), b[..., :rh, :rw].double()
        changes.append(float((a - b).norm() / a.norm()))
    return changes


def smooth_image(height: int, width: int, seed: int = 0) -> Tensor:
    """A ``(1, 3, height, width)`` stand-in for a normalised photo: smooth colour regions plus pixel noise,
    zero mean and unit variance per channel."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 12, 16, generator=g)
    x = F.interpolate(coarse, size=(height, width), mode='bicubic', align_corners=False)
    x = x + 0.1 * torch.randn(1, 3, height, width, generator=g)
    return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)


def stock_backbones() -> Dict[str, Callable[[], nn.Module]]:
    """Builders of MAViT-T and, for comparison, mmdet's Swin-T and ResNet-50."""

    def mavit_t() -> nn.Module:
        from mavit_mm.models.backbones.mavit import MAViT
        return MAViT(arch='tiny', out_indices=(0, 1, 2, 3))

    def swin_t() -> nn.Module:
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(out_indices=(0, 1, 2, 3))

    def resnet50() -> nn.Module:
        from mmdet.models.backbones import ResNet
        return ResNet(depth=50, out_indices=(0, 1, 2, 3))

    return {'MAViT-T': mavit_t, 'Swin-T': swin_t, 'ResNet-50': resnet50}


def compare(names: Sequence[str],
            height: int,
            width: int,
            divisors: Sequence[int],
            base: int = 32,
            seed: int = 0) -> List[dict]:
    """One row per backbone in ``names`` and divisor: the per-stage :func:`feature_change` (eval mode, fp32, the
    same seeded weights and :func:`smooth_image` for every divisor)."""
    builders = stock_backbones()
    image = smooth_image(height, width, seed)
    rows = []
    for name in names:
        torch.manual_seed(seed)
        model = builders[name]()
        model.init_weights()  # each backbone's own initialisation (init_cfg=None: no checkpoint)
        model.eval()
        for divisor in divisors:
            padded = [math.ceil(s / divisor) * divisor for s in (height, width)]
            rows.append(
                dict(backbone=name, divisor=divisor, padded=padded, change=feature_change(model, image, base, divisor)))
    return rows


__all__ = ['compare', 'feature_change', 'pad_to_multiple', 'smooth_image', 'stock_backbones']
