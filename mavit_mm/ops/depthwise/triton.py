"""Depthwise ``K x K`` stride-1 'same' convolution of channels-last maps as Triton kernels.

Why not cuDNN: on the first call with a new input size cuDNN plans (and may compile) a depthwise
kernel, which cost 140-380 ms per convolution, forward plus backward, on an H200 (torch 2.11, cuDNN
9.19; ``docs/speed.md``). MAViT has three depthwise convolutions per block, and detection batches
change size almost every iteration. These kernels are compiled once per (K, dtype) and take any
``H x W`` and channel count: the sizes are plain arguments (``do_not_specialize``), so a model compiles
a handful of variants, not one per stage and size.

On a ``(B, H, W, C)``-ordered map (a channels-last ``(B, C, H, W)`` tensor), with ``P = (K - 1) / 2``::

    y[b, h, w, c] = bias[c] + sum_{i, j} x[b, h + i - P, w + j - P, c] * wt[c, i, j]     (zero outside)
    dx = the same convolution of dy with the flipped kernel (stride 1, symmetric padding)
    dwt[c, i, j] = sum_{b, h, w} dy[b, h, w, c] * x[b, h + i - P, w + j - P, c]

The inputs are read in the weight's dtype (the compute dtype: autocast's, or the input's own), every
product is accumulated in fp32, and the result is stored in that dtype. With ``residual``, the convolution
(rounded to the compute dtype, as a separate convolution's output is) is added to its own input in fp32
and stored in the input's dtype: ``x + conv(x)`` in one pass, the values of the two separate operations
(with autocast's cast of ``x`` between them), and likewise ``dy + conv_T(dy)`` for the input gradient.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_PIXELS = 64
BLOCK_CHANNELS = 64
# weight-gradient programs over the pixels, per channel block: enough to fill a large GPU
_TARGET_PROGRAMS = 264


@triton.jit(do_not_specialize=['H', 'W', 'num_pixels'])
def _dw_conv(x_ptr, w_ptr, b_ptr, y_ptr, H, W, num_pixels, XS, C, K: tl.constexpr, BLOCK_P: tl.constexpr,
             BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, FLIP: tl.constexpr):
    """``y = conv(x, w) + b`` (``RESIDUAL``: ``y = x + conv(x, w) + b``) for ``BLOCK_P`` pixels x ``BLOCK_C``
    channels; x ``(B*H*W, C)`` with pixel stride XS, y ``(B*H*W, C)`` dense, w ``(C, K*K)`` (``FLIP``: read
    with its taps reversed, the transposed convolution of the input gradient)."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_p = offs_p < num_pixels
    in_c = offs_c < C
    col = offs_p % W
    row = (offs_p // W) % H
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            dr = i - (K - 1) // 2
            dc = j - (K - 1) // 2
            ok = in_p & (row + dr >= 0) & (row + dr < H) & (col + dc >= 0) & (col + dc < W)
            src = offs_p + dr * W + dc
            xv = tl.load(x_ptr + src[:, None] * XS + offs_c[None, :], mask=ok[:, None] & in_c[None, :], other=0.0)
            tap = K * K - 1 - (i * K + j) if FLIP else i * K + j
            wv = tl.load(w_ptr + offs_c * (K * K) + tap, mask=in_c, other=0.0)
            acc += xv.to(w_ptr.dtype.element_ty).to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=in_c, other=0.0).to(tl.float32)[None, :]
    mask = in_p[:, None] & in_c[None, :]
    if RESIDUAL:
        skip = tl.load(x_ptr + offs_p[:, None] * XS + offs_c[None, :], mask=mask, other=0.0)
        acc = skip.to(tl.float32) + acc.to(w_ptr.dtype.element_ty).to(tl.float32)
    tl.store(y_ptr + offs_p[:, None] * C + offs_c[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=['H', 'W', 'num_pixels', 'chunk'])
def _dw_conv_grad_weight(x_ptr, g_ptr, part_ptr, w_ptr, H, W, num_pixels, chunk, XS, GS, C, K: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr, ROW: tl.constexpr):
    """Partial ``dwt`` over ``chunk`` pixels: ``part[s, c, i*K + j]`` for this program's slot s and channels
    (``HAS_BIAS``: and the bias gradient's partial sum at ``part[s, c, K*K]``; ``ROW``: K*K + HAS_BIAS); x
    and g read in w's dtype."""
    s = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_c = offs_c < C
    start = s * chunk
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            dr = i - (K - 1) // 2
            dc = j - (K - 1) // 2
            acc = tl.zeros((BLOCK_C, ), dtype=tl.float32)
            for p0 in range(start, start + chunk, BLOCK_P):
                offs_p = p0 + tl.arange(0, BLOCK_P)
                col = offs_p % W
                row = (offs_p // W) % H
                in_p = offs_p < num_pixels
                ok = in_p & (row + dr >= 0) & (row + dr < H) & (col + dc >= 0) & (col + dc < W)
                g = tl.load(
                    g_ptr + offs_p[:, None] * GS + offs_c[None, :], mask=in_p[:, None] & in_c[None, :], other=0.0)
                xv = tl.load(
                    x_ptr + (offs_p + dr * W + dc)[:, None] * XS + offs_c[None, :],
                    mask=ok[:, None] & in_c[None, :],
                    other=0.0)
                g = g.to(w_ptr.dtype.element_ty).to(tl.float32)
                acc += tl.sum(g * xv.to(w_ptr.dtype.element_ty).to(tl.float32), axis=0)
            tl.store(part_ptr + (s * C + offs_c) * ROW + (i * K + j), acc, mask=in_c)
    if HAS_BIAS:
        acc_b = tl.zeros((BLOCK_C, ), dtype=tl.float32)
        for p0 in range(start, start + chunk, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            g = tl.load(
                g_ptr + offs_p[:, None] * GS + offs_c[None, :],
                mask=(offs_p < num_pixels)[:, None] & in_c[None, :],
                other=0.0)
            acc_b += tl.sum(g.to(w_ptr.dtype.element_ty).to(tl.float32), axis=0)
        tl.store(part_ptr + (s * C + offs_c) * ROW + K * K, acc_b, mask=in_c)


def _pixel_major(x: Tensor) -> Tuple[Tensor, int]:
    """``x`` ``(B, C, H, W)`` and its pixel stride: read in place when its channels are adjacent and its
    pixels evenly spaced (a channels-last map, or a channel slice of one), else a dense ``(B, H, W, C)``
    copy."""
    b, c, h, w = x.shape
    ps = x.stride(3)
    if x.stride(1) == 1 and ps >= c and x.stride(2) == w * ps and x.stride(0) == h * w * ps:
        return x, ps
    dense = torch.empty((b, h, w, c), dtype=x.dtype, device=x.device)
    dense.copy_(x.permute(0, 2, 3, 1))
    return dense.permute(0, 3, 1, 2), c


def depthwise_forward(x: Tensor,
                      weight: Tensor,
                      bias: Optional[Tensor],
                      residual: bool = False,
                      flip: bool = False) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H, W)``, both channels-last; weight ``(C, 1, K, K)`` and bias in the compute
    dtype. The result is in that dtype, or with ``residual`` (``x + conv(x)``) in x's. ``flip``: convolve with
    the weight flipped in both directions (read in place, no flipped copy)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    x, xs = _pixel_major(x)
    y = torch.empty((b, c, h, w),
                    dtype=x.dtype if residual else weight.dtype,
                    device=x.device,
                    memory_format=torch.channels_last)
    pixels = b * h * w
    grid = (triton.cdiv(pixels, BLOCK_PIXELS), triton.cdiv(c, BLOCK_CHANNELS))
    _dw_conv[grid](
        x,
        weight.reshape(c, k * k).contiguous(),
        bias if bias is not None else weight,
        y,
        h,
        w,
        pixels,
        xs,
        C=c,
        K=k,
        BLOCK_P=BLOCK_PIXELS,
        BLOCK_C=BLOCK_CHANNELS,
        HAS_BIAS=bias is not None,
        RESIDUAL=residual,
        FLIP=flip,
        num_warps=4)
    return y


def depthwise_grad_weight(x: Tensor,
                          grad: Tensor,
                          weight: Tensor,
                          with_bias: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """``dwt`` ``(C, 1, K, K)`` and (``with_bias``) the bias gradient ``(C, )``, both in fp32, from the input
    and the output gradient (both ``(B, C, H, W)``, read in ``weight``'s dtype, the compute dtype)."""
    b, c, h, w = x.shape
    kernel_size = weight.shape[-1]
    (x, xs), (grad, gs) = _pixel_major(x), _pixel_major(grad)
    pixels = b * h * w
    channel_blocks = triton.cdiv(c, BLOCK_CHANNELS)
    blocks = triton.cdiv(pixels, BLOCK_PIXELS)
    splits = max(1, min(blocks, triton.cdiv(_TARGET_PROGRAMS, channel_blocks)))
    per = triton.cdiv(blocks, splits)
    splits = triton.cdiv(blocks, per)
    taps = kernel_size * kernel_size
    parts = torch.empty(splits, c, taps + with_bias, dtype=torch.float32, device=x.device)
    _dw_conv_grad_weight[(splits, channel_blocks)](
        x,
        grad,
        parts,
        weight,
        h,
        w,
        pixels,
        per * BLOCK_PIXELS,
        xs,
        gs,
        C=c,
        K=kernel_size,
        BLOCK_P=BLOCK_PIXELS,
        BLOCK_C=BLOCK_CHANNELS,
        HAS_BIAS=with_bias,
        ROW=taps + with_bias,
        num_warps=4)
    total = parts.sum(0)
    return total[:, :taps].reshape(c, 1, kernel_size, kernel_size), total[:, taps] if with_bias else None


def depthwise_backward(x: Tensor,
                       weight: Tensor,
                       grad: Tensor,
                       needs: Tuple[bool, bool, bool],
                       residual: bool = False) -> Tuple[Optional[Tensor], ...]:
    """``(dx, dweight, dbias)`` of :func:`depthwise_forward` (None where ``needs`` says so); dweight and dbias
    in the weight's dtype, dx in the input's (``residual``: with the skip connection's ``grad`` added)."""
    dx = depthwise_forward(grad, weight, None, residual, flip=True) if needs[0] else None
    dw = db = None
    if needs[1] or needs[2]:
        dw, db = depthwise_grad_weight(x, grad, weight, needs[2])
        dw = dw.to(weight.dtype) if needs[1] else None
        db = db.to(weight.dtype) if needs[2] else None
    return dx, dw, db
