"""MAViT's convolutions, through the fast path's kernels where they apply.

The layers keep plain ``nn.Conv2d`` modules (the release's checkpoint keys; FLOPs counters that hook
``nn.Conv2d`` count them) and call them through :func:`pointwise` / :func:`depthwise` (the blocks') and
:func:`dense` (the stem's and the downsamples'): with ``fast`` (the backbone's ``fast_path``) a CUDA map goes
to :mod:`mavit_mm.ops.conv`, which needs no cuDNN plan per input size (1x1, depthwise) or far fewer (dense);
anything else to the module itself.
"""
import torch
from torch import Tensor, nn

from mavit_mm.ops.conv import conv2d_in_size_buckets, depthwise_conv, pointwise_conv
from mavit_mm.ops.depthwise import kernels_take
from mavit_mm.ops.mala import kernels_can_run


def pointwise(conv: nn.Conv2d, x: Tensor, fast: bool) -> Tensor:
    """A 1x1 ``conv`` of ``x`` ``(B, C_in, H, W)``: one GEMM over the pixels on the fast path."""
    if fast and x.is_cuda:
        return pointwise_conv(x, conv.weight, conv.bias)
    return conv(x)


def depthwise(conv: nn.Conv2d, x: Tensor, fast: bool) -> Tensor:
    """A depthwise stride-1 'same' ``conv`` of ``x`` ``(B, C, H, W)``: Triton kernels on the fast path."""
    if fast and kernels_take(x, conv.weight):
        return depthwise_conv(x, conv.weight, conv.bias)
    return conv(x)


def dense(conv: nn.Conv2d, x: Tensor, fast: bool) -> Tensor:
    """A dense ``conv`` (the stem's, the downsamples') of ``x`` ``(B, C_in, H, W)``: on the fast path, where its
    kernels run (CUDA; the CPU under Triton's interpreter, for tests), in size buckets
    (:func:`mavit_mm.ops.conv.conv2d_in_size_buckets`: the same values, fewer cuDNN plans); not inside a
    ``torch.compile`` trace, whose symbolic sizes the buckets' integer arithmetic does not take."""
    plain = conv.padding_mode == 'zeros' and conv.groups == 1 and conv.dilation == (1, 1)
    if fast and plain and kernels_can_run(x) and not torch.compiler.is_compiling():
        return conv2d_in_size_buckets(x, conv.weight, conv.bias, conv.stride, conv.padding)
    return conv(x)
