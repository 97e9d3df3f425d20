"""Magnitude-Aware Linear Attention (MALA), the paper's Eq. 13, in plain PyTorch.

With ``phi(x) = ELU(x) + 1``, scale ``s = head_dim ** -0.5``, ``rot`` the rotary encoding and N keys,
the score of query i for key j is::

    z_i    = s * phi(q_i) . mean_j phi(k_j)          (before rotation)
    a_ij   = beta_i * s * rot(phi(q_i)) . rot(phi(k_j)) / N  -  gamma_i / N
    beta_i = 1 + 1 / z_i,   gamma_i = z_i

Without rotation the scores of a query sum to 1, and unlike plain linear attention they get sharper
as ``|phi(q_i)|`` grows. :func:`mala_scores` forms them explicitly (``N x N``: analysis and tests);
:func:`mala_attention` computes ``a @ v`` in ``O(N * head_dim^2)`` without forming them (the layers'
CPU path and the oracle of the fused kernels in :mod:`.triton`).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rotary import apply_rotary

# added to z before 1 / z: keeps beta finite where phi(q) . mean phi(k) underflows
EPS = 1e-6


def phi(x: Tensor) -> Tensor:
    """The feature map of MALA (and of plain linear attention), ``ELU(x) + 1 > 0``."""
    return F.elu(x) + 1.0


def mala_scores(pq: Tensor,
                pk: Tensor,
                rq: Tensor,
                rk: Tensor,
                scale: float,
                allowed: Optional[Tensor] = None) -> Tensor:
    """MALA's explicit score matrix.

    Args:
        pq, pk (Tensor): ``phi(q)`` ``(..., Nq, d)`` and ``phi(k)`` ``(..., N, d)``.
        rq, rk (Tensor): The same after the rotary encoding (``pq``, ``pk`` themselves for none).
        scale (float): ``d ** -0.5``.
        allowed (Tensor, optional): 0 / 1 ``(..., Nq, N)``: which keys each query sees (its region,
            as in Swin's shifted windows); the means and the ``1 / N`` then run over those keys only.
            Defaults to all keys.

    Returns:
        Tensor: ``(..., Nq, N)``.
    """
    if allowed is None:
        n = pk.shape[-2]
        z = scale * (pq @ pk.mean(-2, keepdim=True).transpose(-1, -2))  # (..., Nq, 1)
        return (1 + 1 / (z + EPS)) * scale * (rq @ rk.transpose(-1, -2)) / n - z / n
    count = allowed.sum(-1, keepdim=True)  # keys each query sees
    z = scale * (pq * ((allowed @ pk) / count)).sum(-1, keepdim=True)
    return ((1 + 1 / (z + EPS)) * scale * (rq @ rk.transpose(-1, -2)) - z) * allowed / count


def mala_attention(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                   scale: float) -> Tensor:
    """``mala_scores(...) @ v`` at linear cost, in plain PyTorch.

    Args:
        q, k, v (Tensor): Raw projections ``(B, heads, N, head_dim)``; ``phi`` is applied here.
        sin, cos (Tensor, optional): Rotary tables ``(N, head_dim)``; None for no rotation.
        scale (float): ``head_dim ** -0.5``.

    Returns:
        Tensor: ``(B, heads, N, head_dim)`` in the dtype of ``v``.
    """
    out_dtype = v.dtype
    # The sums over N are long (65k tokens at 1024x1024 / 4): keep them in fp32 (or better)
    # under autocast, so half precision neither overflows nor loses the small terms.
    acc_dtype = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = phi(q.to(acc_dtype)), phi(k.to(acc_dtype)), v.to(acc_dtype)
        n = q.shape[-2]
        z = scale * (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1))  # (B, heads, N, 1)
        if sin is not None:
            q = apply_rotary(q, sin, cos)
            k = apply_rotary(k, sin, cos)
        kv = (k.transpose(-2, -1) @ v) * (scale / n)  # (B, heads, d, d)
        out = (q @ kv) * (1.0 + 1.0 / (z + EPS)) - z * v.mean(dim=-2, keepdim=True)
    return out.to(out_dtype)
