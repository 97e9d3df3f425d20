"""The MAViT block's convolutions, through the fast path's kernels where they apply.

The layers keep plain ``nn.Conv2d`` modules (the release's checkpoint keys; FLOPs counters that hook
``nn.Conv2d`` count them) and call them through :func:`pointwise` / :func:`depthwise`: with ``fast``
(the backbone's ``fast_path``) a channels-last CUDA map goes to :mod:`mavit_mm.ops.conv`, which needs
no cuDNN plan per input size; anything else to the module itself.
"""
from torch import Tensor, nn

from mavit_mm.ops.conv import depthwise_conv, pointwise_conv
from mavit_mm.ops.depthwise import kernels_take


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
