"""Rotation of channel pairs, the arithmetic of MAViT's 2-D rotary encoding.

The tables ``sin`` / ``cos`` come from :class:`mavit_mm.models.layers.RotaryEmbedding2d`.
:func:`apply_rotary` is the definition; :func:`rotate_to` rotates and casts in one step, through the
Triton kernels of :mod:`.triton` where they run (the same values, bit for bit).
"""
import warnings
from typing import Dict, Tuple

import torch
from torch import Tensor

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# per (device, x dtype, output dtype, backward, heads, head_dim): did the kernels pass check_kernels
_KERNELS_OK: Dict[Tuple, bool] = {}


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


def check_kernels(x: Tensor, dtype: torch.dtype) -> bool:
    """Run the kernels once per device, dtypes, head layout and need of a backward on a small problem shaped
    as the attention's (a head view of a channels-last ``qkvo`` map, the warm-up's job) against the plain
    form: a Triton / driver combination that fails to compile them or computes other values gets a warning
    and the plain form instead of a crash or a silent change."""
    heads, head_dim = x.shape[1], x.shape[-1]
    backward = torch.is_grad_enabled() and x.requires_grad
    key = (x.device, x.dtype, dtype, backward, heads, head_dim)
    if key in _KERNELS_OK:
        return _KERNELS_OK[key]
    reason = ''
    try:
        from .triton import rotate_to_triton
        g = torch.Generator().manual_seed(0)
        qkvo = torch.randn(1, 4 * heads * head_dim, 3, 4, generator=g).to(x.device, x.dtype)
        qkvo = qkvo.contiguous(memory_format=torch.channels_last)
        theta = torch.rand(12, head_dim, generator=g).to(x.device)
        grad = torch.randn(1, heads, 12, head_dim, generator=g).to(x.device, dtype)
        results = []
        with torch.set_grad_enabled(backward), torch.autocast(x.device.type, enabled=False):
            for fn in (lambda q: apply_rotary(q, theta.sin(), theta.cos()).to(dtype),
                       lambda q: rotate_to_triton(q, theta.sin(), theta.cos(), dtype)):
                leaf = qkvo.detach().requires_grad_(backward)
                y = fn(leaf.chunk(4, dim=1)[0].reshape(1, heads, head_dim, 12).transpose(-2, -1))
                results.append([y.detach()] + ([torch.autograd.grad(y, leaf, grad)[0]] if backward else []))
        ok = all(torch.equal(a, b) for a, b in zip(*results))
        reason = 'values differ from the plain form'
    except Exception as e:  # any failure to compile or launch: fall back, never crash a user's run
        ok = False
        reason = f'{type(e).__name__}: {str(e)[:300]}'
    if not ok:
        warnings.warn(
            f'MAViT: the Triton rotary kernels failed their self-check on {x.device} ({x.dtype} -> {dtype}; '
            f"{reason}); the softmax stages rotate in plain PyTorch there. Set fast_path='off' to silence this, "
            'and please report it with your torch / Triton versions.', RuntimeWarning)
    _KERNELS_OK[key] = ok
    return ok


def rotate_to(x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype, fused: bool = True) -> Tensor:
    """``apply_rotary(x, sin, cos).to(dtype)`` as a contiguous ``(B, heads, N, head_dim)`` tensor.

    With ``fused`` and where :func:`kernels_take` holds and the kernels passed :func:`check_kernels`, one
    Triton kernel each way (instead of about a dozen element-wise launches forward and as many backward),
    computing the same roundings in the same order.
    """
    if fused and kernels_take(x, sin, cos, dtype) and check_kernels(x, dtype):
        from .triton import rotate_to_triton
        return rotate_to_triton(x, sin, cos, dtype)
    return apply_rotary(x, sin, cos).to(dtype).contiguous()


__all__ = ['apply_rotary', 'check_kernels', 'kernels_take', 'rotate_pairs', 'rotate_to']
