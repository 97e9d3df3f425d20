"""The MAViT block's convolutions on the fast path: no cuDNN plan per input size.

cuDNN chooses (and for depthwise convolutions may compile) a kernel the first time it sees an input
size; with detection batches of a new size almost every iteration that host time dominated a
training step (``docs/speed.md``). On channels-last CUDA maps:

- :func:`pointwise_conv`: a 1x1 convolution as one GEMM over the pixels (cuBLAS);
- :func:`depthwise_conv`: a depthwise ``K x K`` 'same' convolution as Triton kernels
  (:mod:`mavit_mm.ops.depthwise`), compiled once for all sizes.

Both compute what ``F.conv2d`` computes (fp32 accumulation) and fall back to it elsewhere.

The dense convolutions that stay on cuDNN (the stem's and the downsamples') run inside
:func:`cudnn_without_benchmark`: with ``cudnn.benchmark`` on (mmseg's default runtime) cuDNN would time
every algorithm for each new input size, which at ADE20K's test sizes costs more than the convolutions.
"""
import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .depthwise import depthwise_conv


def pointwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """A 1x1 convolution ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``; weight ``(C_out, C_in, 1, 1)``.

    A channels-last CUDA map goes through ``F.linear`` on its ``(B, H, W, C)`` view (the result is
    channels-last too); anything else through ``F.conv2d``."""
    if x.is_cuda and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


@contextlib.contextmanager
def cudnn_without_benchmark() -> Iterator[None]:
    """Run the block with ``torch.backends.cudnn.benchmark`` off (cuDNN's heuristic choice of algorithm,
    no timing run per new input size), then put the setting back. The same convolutions are computed;
    only the algorithm cuDNN picks for them may differ, as between two benchmark runs."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


__all__ = ['cudnn_without_benchmark', 'depthwise_conv', 'pointwise_conv']
