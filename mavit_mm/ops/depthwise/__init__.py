"""Depthwise ``K x K`` stride-1 'same' convolution: ``depthwise_conv(x, weight, bias)``, and with
``residual=True`` the convolution added to its input, ``x + depthwise_conv(x, weight, bias)``.

Same result as ``F.conv2d(x, weight, bias, padding=K // 2, groups=C)`` (plus ``x``); on CUDA (or under
``TRITON_INTERPRET=1`` on CPU) through the Triton kernels of :mod:`.triton`, which take any input size
without a per-size plan, elsewhere through ``F.conv2d``. Under autocast the convolution computes in the
autocast dtype, as autocast casts a convolution's inputs. The residual form is one kernel each way where
the two operations take several (autocast's cast of ``x``, the convolution, the sum; in the backward the
gradient's cast, the transposed convolution, its cast back and the sum) and gives their values.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..mala import kernels_can_run

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _DepthwiseConv(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool) -> Tensor:
        from .triton import depthwise_forward
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.residual = residual
        return depthwise_forward(x, weight, bias, residual)

    @staticmethod
    def backward(ctx, grad: Tensor):
        from .triton import depthwise_backward
        x, weight = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2] and ctx.has_bias)
        return (*depthwise_backward(x, weight, grad, needs, ctx.residual), None)


def kernels_take(x: Tensor, weight: Tensor) -> bool:
    """Whether the Triton kernels compute ``depthwise_conv(x, weight)``: a device they run on, a float
    dtype, a ``(C, 1, K, K)`` weight with odd K over C = x's channels."""
    return (kernels_can_run(x) and x.dtype in _DTYPES and x.dim() == 4 and weight.dim() == 4
            and weight.shape[0] == x.shape[1] and weight.shape[1] == 1 and weight.shape[2] == weight.shape[3]
            and weight.shape[-1] % 2 == 1)


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, residual: bool = False) -> Tensor:
    """Depthwise convolution of ``x`` ``(B, C, H, W)`` with ``weight`` ``(C, 1, K, K)`` (odd K), stride 1,
    zero padding ``K // 2``: ``(B, C, H, W)``, channels-last where the kernels ran. ``residual``: ``x`` plus
    that convolution (in the dtype the sum would have: x's, where x is fp32 or in the compute dtype)."""
    if not kernels_take(x, weight):
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
        return x + y if residual else y
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    if residual and x.dtype not in (torch.float32, dtype):
        return x + depthwise_conv(x, weight, bias)  # a sum in x's own low precision: as two operations
    weight = weight.to(dtype)
    bias = bias.to(dtype) if bias is not None else None
    if not residual:
        x = x.to(dtype)
    with torch.autocast(device, enabled=False):
        return _DepthwiseConv.apply(x, weight, bias, residual)


__all__ = ['depthwise_conv', 'kernels_take']
