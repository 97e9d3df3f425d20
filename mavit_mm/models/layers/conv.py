"""``nn.Conv2d`` subclasses of the MAViT block that take the fast path's convolutions.

They hold the same parameters under the same names as ``nn.Conv2d`` (checkpoints load as before);
with ``use_kernels`` (set by the backbone's ``fast_path``) they call :mod:`mavit_mm.ops.conv`, which
needs no cuDNN plan per input size, otherwise ``nn.Conv2d.forward``.
"""
from torch import Tensor, nn

from mavit_mm.ops.conv import depthwise_conv, pointwise_conv


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``; a GEMM on channels-last CUDA maps."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)
        self.use_kernels = False

    def forward(self, x: Tensor) -> Tensor:
        if self.use_kernels:
            return pointwise_conv(x, self.weight, self.bias)
        return super().forward(x)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``K x K`` stride-1 'same' convolution ``(B, C, H, W)`` -> ``(B, C, H, W)``."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels)
        self.use_kernels = False

    def forward(self, x: Tensor) -> Tensor:
        if self.use_kernels:
            return depthwise_conv(x, self.weight, self.bias)
        return super().forward(x)
