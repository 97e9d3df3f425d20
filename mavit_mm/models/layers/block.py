"""The MAViT block: conditional position encoding, attention and a convolutional FFN."""
from typing import Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention_base import ConvAttentionBase
from .conv import depthwise, pointwise
from .mala import MALAttention
from .softmax_attention import RoPESoftmaxAttention

ATTENTIONS = {'mala': MALAttention, 'softmax': RoPESoftmaxAttention}


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map.

    The parameters live in the child ``norm`` (checkpoint keys ``*.norm.weight``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return x.permute(0, 3, 1, 2)


class ConvFFN(nn.Module):
    """1x1 conv, GELU, residual depthwise 3x3 conv, 1x1 conv on a ``(B, C, H, W)`` map.

    Args:
        embed_dims (int): Channels C in and out.
        hidden_dims (int): Channels of the hidden layer.
        recompute (bool): While training, keep only the FFN's input for the backward and run the
            FFN again there up to fc2's input (non-reentrant checkpointing stops once every saved
            tensor is back): of the C + three 3.5C-wide maps the plain FFN saves, one C-wide map
            stays, for an extra fc1, GELU and depthwise conv per backward. Defaults to False.
    """

    def __init__(self, embed_dims: int, hidden_dims: int, recompute: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, 1, 1, groups=hidden_dims)
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)
        self.recompute = recompute
        # set by the backbone's fast_path: the convolutions may take the fast path's kernels
        self.fast_convs = False

    #: the depthwise convolutions added to their own input (the kernel warm-up compiles that form for them)
    residual_convs = ('dwconv', )

    def _ffn(self, x: Tensor) -> Tensor:
        x = self.act(pointwise(self.fc1, x, self.fast_convs))
        x = depthwise(self.dwconv, x, self.fast_convs, residual=True)  # x + dwconv(x)
        return pointwise(self.fc2, x, self.fast_convs)

    def forward(self, x: Tensor) -> Tensor:
        if self.recompute and torch.is_grad_enabled() and (x.requires_grad or self.fc1.weight.requires_grad):
            # nothing random inside: no RNG state to save (and none to read during a CUDA-graph capture)
            return checkpoint(self._ffn, x, use_reentrant=False, preserve_rng_state=False)
        return self._ffn(x)


class MAViTBlock(nn.Module):
    """One MAViT block on a ``(B, C, H, W)`` map::

        x = x + pos(x)                                  # depthwise 3x3 conv
        x = x + drop_path(gamma_1 * attn(norm1(x)))
        x = x + drop_path(gamma_2 * ffn(norm2(x)))

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        attn_type (str): ``'mala'`` (linear cost) or ``'softmax'`` (quadratic).
        mlp_ratio (float): FFN hidden channels over C. Defaults to 3.5.
        drop_path (float): Stochastic depth rate of this block. Defaults to 0.
        layer_scale_init_value (float): Initial value of ``gamma_1`` / ``gamma_2``.
            Defaults to 1.
        ffn_recompute (bool): Selective recomputation in the FFN (see :class:`ConvFFN`).
            Defaults to False.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_type: str,
                 mlp_ratio: float = 3.5,
                 drop_path: float = 0.0,
                 layer_scale_init_value: float = 1.0,
                 ffn_recompute: bool = False) -> None:
        super().__init__()
        if attn_type not in ATTENTIONS:
            raise ValueError(f'attention type {attn_type!r} is not one of {sorted(ATTENTIONS)}')
        self.attn_type = attn_type
        self.pos = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, groups=embed_dims)
        self.norm1 = LayerNorm2d(embed_dims)
        self.attn: ConvAttentionBase = ATTENTIONS[attn_type](embed_dims, num_heads)
        self.norm2 = LayerNorm2d(embed_dims)
        self.ffn = ConvFFN(embed_dims, int(mlp_ratio * embed_dims), ffn_recompute)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.gamma_1 = nn.Parameter(torch.full((1, embed_dims, 1, 1), float(layer_scale_init_value)))
        self.gamma_2 = nn.Parameter(torch.full((1, embed_dims, 1, 1), float(layer_scale_init_value)))
        self.fast_convs = False  # set by the backbone's fast_path, as in the attention and the FFN

    residual_convs = ('pos', )  # as ConvFFN's

    def forward(self, x: Tensor, rope: Tuple[Tensor, Tensor]) -> Tensor:
        """Args: x ``(B, C, H, W)``; rope: ``(sin, cos)`` of the stage. Returns ``(B, C, H, W)``."""
        x = depthwise(self.pos, x, self.fast_convs, residual=True)  # x + pos(x)
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), rope))
        return x + self.drop_path(self.gamma_2 * self.ffn(self.norm2(x)))
