"""The rotary encoding of the softmax stages' queries and keys, cast to the attention's dtype, as one Triton
kernel forward and one backward.

For ``x`` ``(B, heads, N, D)`` (any strides; the attention's head views of the ``qkvo`` map), fp32 tables
``sin`` / ``cos`` ``(N, D)`` and ``P(x0, x1) = (-x1, x0)`` on channel pairs::

    y  = to_dtype(x cos + P(x) sin)                                     (fp32 arithmetic)
    dx = to_x_dtype(to_x_dtype(g cos) + P^T(to_x_dtype(g sin)))         (g = dy in fp32)

Each line rounds where the plain PyTorch form (:func:`mavit_mm.ops.rotary.apply_rotary` then ``.to``) rounds:
each fp32 product and sum on its own (the kernels run with ``enable_fp_fusion=False``, so no multiply-add is
contracted into one rounding), and in the backward the two branches' gradients in ``x``'s dtype before their
sum, as autograd casts each branch's gradient to the input's dtype before it adds them. The outputs are
therefore equal bit for bit, while the plain form launches about a dozen element-wise kernels each way.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_TOKENS = 64


@triton.jit
def _pairs(x, BLOCK: tl.constexpr, D: tl.constexpr):
    """``P(x)``: every channel pair ``(x0, x1)`` of a ``(BLOCK, D)`` tile becomes ``(-x1, x0)``."""
    x0, x1 = tl.split(tl.reshape(x, (BLOCK, D // 2, 2)))
    return tl.reshape(tl.join(-x1, x0), (BLOCK, D))


@triton.jit
def _pairs_t(y, BLOCK: tl.constexpr, D: tl.constexpr):
    """``P^T(y)``: every channel pair ``(y0, y1)`` becomes ``(y1, -y0)``."""
    y0, y1 = tl.split(tl.reshape(y, (BLOCK, D // 2, 2)))
    return tl.reshape(tl.join(y1, -y0), (BLOCK, D))


@triton.jit(do_not_specialize=['N'])
def _rotary_fwd(x_ptr, sin_ptr, cos_ptr, y_ptr, N, H, sxb, sxh, sxn, sxd, D: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """One ``(BLOCK_N, D)`` tile of one (batch, head): ``y`` dense ``(B * heads, N, D)``."""
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_n[:, None] < N) & (offs_d[None, :] < D)
    x = tl.load(
        x_ptr + b * sxb + h * sxh + offs_n[:, None].to(tl.int64) * sxn + offs_d[None, :] * sxd, mask=mask,
        other=0.0).to(tl.float32)
    table = offs_n[:, None] * D + offs_d[None, :]
    sin = tl.load(sin_ptr + table, mask=mask, other=0.0)
    cos = tl.load(cos_ptr + table, mask=mask, other=0.0)
    y = x * cos + _pairs(x, BLOCK_N, BLOCK_D) * sin
    out = (bh.to(tl.int64) * N + offs_n[:, None]) * D + offs_d[None, :]
    tl.store(y_ptr + out, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=['N'])
def _rotary_bwd(g_ptr, sin_ptr, cos_ptr, dx_ptr, N, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One tile of ``dx`` from ``g``, both dense ``(B * heads, N, D)``; ``dx`` in ``x``'s dtype."""
    bh = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_n[:, None] < N) & (offs_d[None, :] < D)
    dense = (bh * N + offs_n[:, None]) * D + offs_d[None, :]
    g = tl.load(g_ptr + dense, mask=mask, other=0.0).to(tl.float32)
    table = offs_n[:, None] * D + offs_d[None, :]
    sin = tl.load(sin_ptr + table, mask=mask, other=0.0)
    cos = tl.load(cos_ptr + table, mask=mask, other=0.0)
    dtype = dx_ptr.dtype.element_ty
    direct = (g * cos).to(dtype).to(tl.float32)
    paired = _pairs_t((g * sin).to(dtype).to(tl.float32), BLOCK_N, BLOCK_D)
    tl.store(dx_ptr + dense, (direct + paired).to(dtype), mask=mask)


def _grid(x: Tensor) -> Tuple[int, int]:
    b, h, n, _ = x.shape
    return (b * h, triton.cdiv(n, BLOCK_TOKENS))


def rotary_forward(x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype) -> Tensor:
    """``apply_rotary(x, sin, cos).to(dtype)``, contiguous ``(B, heads, N, D)``."""
    b, h, n, d = x.shape
    y = torch.empty((b, h, n, d), dtype=dtype, device=x.device)
    if y.numel():
        _rotary_fwd[_grid(x)](
            x,
            sin.contiguous(),
            cos.contiguous(),
            y,
            n,
            h,
            *x.stride(),
            D=d,
            BLOCK_N=BLOCK_TOKENS,
            BLOCK_D=triton.next_power_of_2(d),
            enable_fp_fusion=False)
    return y


def rotary_backward(grad: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype) -> Tensor:
    """The gradient of :func:`rotary_forward` for its input (of ``dtype``), contiguous ``(B, heads, N, D)``."""
    grad = grad.contiguous()
    b, h, n, d = grad.shape
    dx = torch.empty((b, h, n, d), dtype=dtype, device=grad.device)
    if dx.numel():
        _rotary_bwd[_grid(grad)](
            grad,
            sin.contiguous(),
            cos.contiguous(),
            dx,
            n,
            D=d,
            BLOCK_N=BLOCK_TOKENS,
            BLOCK_D=triton.next_power_of_2(d),
            enable_fp_fusion=False)
    return dx


class _RotateTo(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.save_for_backward(sin, cos)
        ctx.x_dtype = x.dtype
        return rotary_forward(x, sin, cos, dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        sin, cos = ctx.saved_tensors
        return rotary_backward(grad, sin, cos, ctx.x_dtype), None, None, None


def rotate_to_triton(x: Tensor, sin: Tensor, cos: Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`mavit_mm.ops.rotary.rotate_to` through the kernels (autograd for ``x``; autocast off inside,
    as the plain form computes in fp32 from the tables' dtype anyway)."""
    with torch.autocast(x.device.type, enabled=False):
        return _RotateTo.apply(x, sin, cos, dtype)
