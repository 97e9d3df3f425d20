"""Magnitude-Aware Linear Attention (MALA), the paper's Eq. 13.

With ``phi(x) = ELU(x) + 1``, scale ``s = head_dim ** -0.5`` and N tokens::

    z_i = s * phi(q_i) . mean_j phi(k_j)                 (before rotation)
    y_i = (1 + 1 / z_i) * rot(phi(q_i)) (s/N) sum_j rot(phi(k_j))^T v_j  -  z_i mean_j v_j

i.e. attention scores ``beta_i * s * rot(phi(q_i)) . rot(phi(k_j)) / N - gamma_i / N`` with
``beta_i = 1 + 1 / z_i`` and ``gamma_i = z_i``: without rotation they sum to 1 over the keys for
every query, and unlike plain linear attention they get sharper as ``|phi(q_i)|`` grows.
The cost is ``O(N * head_dim^2)`` per head: the ``N x N`` matrix is never formed.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mavit_mm.registry import MODELS
from .attention_base import ConvAttentionBase
from .fast_path import mala_kernels_usable
from .rotary import apply_rotary

EPS = 1e-6


def mala_attention(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                   scale: float) -> Tensor:
    """Reference MALA in plain PyTorch (the CPU path and the oracle for fast kernels).

    Args:
        q, k, v (Tensor): Raw projections ``(B, heads, N, head_dim)``; ``phi`` is applied here.
        sin, cos (Tensor, optional): Rotary tables ``(N, head_dim)``; None for no rotation
            (MALA as a drop-in for other backbones' attention).
        scale (float): ``head_dim ** -0.5``.

    Returns:
        Tensor: ``(B, heads, N, head_dim)`` in the dtype of ``v``.
    """
    out_dtype = v.dtype
    # The sums over N are long (65k tokens at 1024x1024 / 4): keep them in fp32 (or better)
    # under autocast, so half precision neither overflows nor loses the small terms.
    acc_dtype = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.to(acc_dtype), k.to(acc_dtype), v.to(acc_dtype)
        q = F.elu(q) + 1.0
        k = F.elu(k) + 1.0
        n = q.shape[-2]
        z = scale * (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1))   # (B, heads, N, 1)
        if sin is not None:
            q = apply_rotary(q, sin, cos)
            k = apply_rotary(k, sin, cos)
        kv = (k.transpose(-2, -1) @ v) * (scale / n)                        # (B, heads, d, d)
        out = (q @ kv) * (1.0 + 1.0 / (z + EPS)) - z * v.mean(dim=-2, keepdim=True)
    return out.to(out_dtype)


@MODELS.register_module()
class MALAttention(ConvAttentionBase):
    """MAViT's magnitude-aware linear attention block (the release's flag ``'l'``).

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
    """

    def attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        if self.use_kernels and mala_kernels_usable(q):
            from .mala_triton import mala_attention_triton  # imports Triton: only on this path
            return mala_attention_triton(q, k, v, sin, cos, self.scale)
        return mala_attention(q, k, v, sin, cos, self.scale)
