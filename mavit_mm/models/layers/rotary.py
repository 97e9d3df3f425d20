"""2-D rotary position encoding (RoPE) of MAViT: the tables (the rotation itself is in :mod:`mavit_mm.ops.rotary`).

Each head's ``head_dim`` channels form ``head_dim / 2`` consecutive pairs. The
first half of the pairs is rotated by the token's row index times a frequency,
the second half by its column index times the same frequencies.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from mavit_mm.ops.rotary import apply_rotary, rotate_pairs

__all__ = ['RotaryEmbedding2d', 'apply_rotary', 'rotate_pairs']


class RotaryEmbedding2d(nn.Module):
    """Sine / cosine tables of the 2-D rotary encoding for one stage.

    The persistent buffer ``angle`` (``head_dim // 2`` values
    ``[b0, b0, b1, b1, ...]`` with ``b_t = 10000 ** -t``, ``t`` evenly spaced
    in [0, 1]) is stored in checkpoints under ``layers.{i}.RoPE.angle``.

    Args:
        embed_dims (int): Channels of the stage.
        num_heads (int): Attention heads; ``embed_dims / num_heads`` must be a
            multiple of 4.
    """

    def __init__(self, embed_dims: int, num_heads: int) -> None:
        super().__init__()
        head_dim = embed_dims // num_heads
        if embed_dims % num_heads or head_dim % 4:
            raise ValueError(f'RotaryEmbedding2d needs embed_dims ({embed_dims}) divisible by num_heads '
                             f'({num_heads}) and a head_dim divisible by 4, got head_dim={embed_dims / num_heads}')
        freqs = 1.0 / (10000**torch.linspace(0, 1, head_dim // 4))
        self.register_buffer('angle', freqs.repeat_interleave(2))

    def forward(self, hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Tables for an ``H x W`` map, tokens in row-major order.

        Returns:
            tuple[Tensor, Tensor]: ``sin`` and ``cos``, each ``(H * W, head_dim)``.
        """
        h, w = hw
        rows = torch.arange(h, device=self.angle.device, dtype=self.angle.dtype)
        cols = torch.arange(w, device=self.angle.device, dtype=self.angle.dtype)
        theta_h = (rows[:, None] * self.angle)[:, None, :].expand(h, w, -1)
        theta_w = (cols[:, None] * self.angle)[None, :, :].expand(h, w, -1)
        theta = torch.cat([theta_h, theta_w], dim=-1).reshape(h * w, -1)
        return theta.sin(), theta.cos()
