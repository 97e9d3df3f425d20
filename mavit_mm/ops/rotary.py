"""Rotation of channel pairs, the arithmetic of MAViT's 2-D rotary encoding.

The tables ``sin`` / ``cos`` come from :class:`mavit_mm.models.layers.RotaryEmbedding2d`.
"""
import torch
from torch import Tensor


def rotate_pairs(x: Tensor) -> Tensor:
    """Map every consecutive channel pair ``(x0, x1)`` of ``(..., D)`` to ``(-x1, x0)``."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x1, x0), dim=-1).flatten(-2)


def apply_rotary(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` ``(..., N, head_dim)`` by the tables ``sin``, ``cos`` (each ``(N, head_dim)``)."""
    return x * cos + rotate_pairs(x) * sin
