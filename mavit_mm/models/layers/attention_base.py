"""The convolutional skeleton shared by MAViT's two attentions."""
from typing import Tuple

import torch
from torch import Tensor, nn

from .conv import depthwise, pointwise


class ConvAttentionBase(nn.Module):
    """Attention on a ``(B, C, H, W)`` map with a gated, LePE-augmented output.

    ``qkvo`` (1x1 conv) produces q, k, v and an output gate o. Within q, k and
    v, channel ``c`` belongs to head ``c // head_dim``. The output is
    ``proj((attend(q, k, v) + lepe(v)) * o)`` where ``lepe`` is a depthwise
    5x5 conv on the v map. Subclasses implement :meth:`attend`.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads; ``head_dim = C / num_heads``.
    """

    def __init__(self, embed_dims: int, num_heads: int) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dim = embed_dims // num_heads
        self.scale = self.head_dim**-0.5
        self.qkvo = nn.Conv2d(embed_dims, embed_dims * 4, 1)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, 5, 1, 2, groups=embed_dims)
        self.proj = nn.Conv2d(embed_dims, embed_dims, 1)
        # set by the backbone's fast_path: attend() may use fused kernels where they run, and the
        # convolutions the fast path's (mavit_mm.models.layers.conv)
        self.use_kernels = False
        self.fast_convs = False

    def attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        """Mix tokens: q, k, v ``(B, heads, N, head_dim)`` -> ``(B, heads, N, head_dim)``."""
        raise NotImplementedError

    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, heads, H * W, head_dim)``."""
        b, _, h, w = x.shape
        return x.reshape(b, self.num_heads, self.head_dim, h * w).transpose(-2, -1)

    def forward(self, x: Tensor, rope: Tuple[Tensor, Tensor]) -> Tensor:
        """Args: x ``(B, C, H, W)``; rope: ``(sin, cos)``, each ``(H * W, head_dim)``.
        Returns ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        q, k, v, o = pointwise(self.qkvo, x, self.fast_convs).chunk(4, dim=1)
        lepe = depthwise(self.lepe, v, self.fast_convs)
        out = self.attend(self.split_heads(q), self.split_heads(k), self.split_heads(v), *rope)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # keep the fast path's channels-last layout: a view for the MALA kernels' output
            out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = out.transpose(-2, -1).reshape(b, c, h, w)
        return pointwise(self.proj, (out + lepe) * o, self.fast_convs)
