"""The classification head of the MAViT release, as an mmpretrain head."""
from typing import Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class MAViTClsHead(ClsHead):
    """1x1 conv to ``projection`` channels, BN, swish, global average pooling, 1x1 conv to classes.

    Applied to the last stage's map ``(B, in_channels, H, W)``; returns logits ``(B, num_classes)``.
    Its parameters are named as the release's top-level ``proj.*``, ``norm.*`` and ``head.*``, so in an
    ``ImageClassifier`` a release key ``k`` of the head becomes ``head.k``.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last stage (512 for T/S/B, 640 for L).
        projection (int): Channels of the projection. Defaults to 2048 (2560 for L).
        norm_cfg (dict): Norm after the projection. Defaults to ``dict(type='BN')``.
        init_cfg (dict, optional): Defaults to truncated-normal convs (std 0.02, zero bias), as released.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`mmpretrain.models.heads.ClsHead`.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 projection: int = 2048,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Conv2d', std=0.02, bias=0.),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.num_classes = num_classes
        self.proj = nn.Conv2d(in_channels, projection, 1)
        self.norm = build_norm_layer(norm_cfg, projection)[1]
        self.head = nn.Conv2d(projection, num_classes, 1)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """``(B, C, H, W)`` of the last stage -> pooled ``(B, projection, 1, 1)``."""
        x = self.norm(self.proj(feats[-1]))
        return (x * torch.sigmoid(x)).mean(dim=(2, 3), keepdim=True)

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        return self.head(self.pre_logits(feats)).flatten(1)
