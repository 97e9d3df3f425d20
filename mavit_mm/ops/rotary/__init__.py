"""Rotation of channel pairs, the arithmetic of MAViT's 2-D rotary encoding.

The tables ``sin`` / ``cos`` come from :class:`mavit_mm.models.layers.RotaryEmbedding2d`.
:func:`apply_rotary` is the definition; :func:`rotate_to` rotates and casts in one step, through the
Triton kernels of :mod:`.triton` where they run (the same values, bit for bit).
"""
import torch
from torch import Tensor

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def rotate_pairs(x: Tensor) -> Tensor:
    """Map every consecutive channel pair ``(x0, x1)`` of ``(..., D)`` to ``(-x1, x0)``."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x1, x0), dim=-1).flatten(-2)


def apply_rotary(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` ``(..., N, head_dim)`` by the tables ``sin``, ``cos`` (each ``(N, head_dim)``)."""
    return x * cos + rotate_pairs(x) * sin


def kernels_take(x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype) -> bool:
    """Whether :mod:`.triton` computes ``rotate_to(x, sin, cos, dtype)``: a ``(B, heads, N, D)`` ``x`` with an
    even D on a device the kernels run on, fp32 tables that need no gradient, float dtypes, outside a
    ``torch.compile`` trace."""
    from ..mala import kernels_can_run  # here: the MALA package imports this one
    return (kernels_can_run(x) and x.dim() == 4 and x.shape[-1] % 2 == 0 and x.dtype in _DTYPES and dtype in _DTYPES
            and sin.dtype == cos.dtype == torch.float32 and sin.shape == cos.shape == x.shape[-2:]
            and not (sin.requires_grad or cos.requires_grad) and not torch.compiler.is_compiling())


def rotate_to(x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype, fused: bool = True) -> Tensor:
    """``apply_rotary(x, sin, cos).to(dtype)`` as a contiguous ``(B, heads, N, head_dim)`` tensor.

    With ``fused`` and where :func:`kernels_take` holds, one Triton kernel each way (instead of about a dozen
    element-wise launches forward and as many backward), computing the same roundings in the same order.
    """
    if fused and kernels_take(x, sin, cos, dtype):
        from .triton import rotate_to_triton
        return rotate_to_triton(x, sin, cos, dtype)
    return apply_rotary(x, sin, cos).to(dtype).contiguous()


__all__ = ['apply_rotary', 'kernels_take', 'rotate_pairs', 'rotate_to']
