"""mmpretrain's softmax attentions with MALA in place of ``softmax(q k^T) v``; same parameters.

``MALAMultiheadAttention`` keeps mmpretrain's ``MultiheadAttention`` (DeiT / ViT) whole and only
swaps its attention function. ``WindowMALA`` replaces Swin's ``WindowMSA``: MALA inside each window;
in shifted windows a query only sees keys of its own region, as Swin's mask does, by keeping one
``k^T v`` sum per region. MALA has no use for Swin's relative position bias table, the only
parameters that go (0.02 M for Swin-T). No rotary encoding: the models stay as they were.
"""
from typing import Optional

import torch
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA
from torch import Tensor

from mavit_mm.ops.mala.naive import mala_attention, mala_scores, phi


def windowed_mala(q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor] = None) -> Tensor:
    """MALA over the tokens of each window, optionally restricted to same-region pairs.

    Args:
        q, k, v (Tensor): ``(B * windows, heads, N, d)`` raw projections.
        scale (float): ``d ** -0.5``.
        mask (Tensor, optional): Swin's additive shift mask ``(windows, N, N)``: 0 where a pair
            may attend, a large negative value where not. Pairs that may attend share a region.

    Returns:
        Tensor: ``(B * windows, heads, N, d)``.
    """
    if mask is None:
        return mala_attention(q, k, v, None, None, scale)
    out_dtype = v.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        pq, pk, v = phi(q.float()), phi(k.float()), v.float()
        nw = mask.shape[0]
        # pairs that may attend share a region: MALA's sums restricted to the query's region
        allowed = (mask > -1).float().repeat(q.shape[0] // nw, 1, 1).unsqueeze(1)  # (B*nW, 1, N, N)
        out = mala_scores(pq, pk, pq, pk, scale, allowed) @ v
    return out.to(out_dtype)


class MALAMultiheadAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` (same arguments and weights) computing MALA."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scaled_dot_product_attention = self._mala

    @classmethod
    def convert(cls, module: MultiheadAttention) -> 'MALAMultiheadAttention':
        """Turn a built stock module into this class in place (its weights and settings kept)."""
        module.__class__ = cls
        module.scaled_dot_product_attention = module._mala
        return module

    def _mala(self,
              q: Tensor,
              k: Tensor,
              v: Tensor,
              attn_mask: Optional[Tensor] = None,
              dropout_p: float = 0.0) -> Tensor:
        if attn_mask is not None:
            raise NotImplementedError('MALAMultiheadAttention has no attention mask support')
        return mala_attention(q, k, v, None, None, self.head_dims**-0.5)


class WindowMALA(WindowMSA):
    """Swin's window attention with MALA; ``forward(x (B*nW, N, C), mask) -> (B*nW, N, C)``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.relative_position_bias_table  # meaningless for linear attention

    @classmethod
    def convert(cls, module: WindowMSA) -> 'WindowMALA':
        """Turn a built stock ``WindowMSA`` into this class in place, dropping the bias table."""
        module.__class__ = cls
        del module.relative_position_bias_table
        return module

    def init_weights(self) -> None:
        pass  # WindowMSA only initialises the bias table

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = windowed_mala(qkv[0], qkv[1], qkv[2], self.scale, mask)
        out = self.attn_drop(out)  # no attention matrix to drop: dropout on the mixed values
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))
