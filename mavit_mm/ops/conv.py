"""The MAViT block's convolutions on the fast path: no cuDNN plan per input size.

cuDNN chooses (and for depthwise convolutions may compile) a kernel the first time it sees an input
size; with detection batches of a new size almost every iteration that host time dominated a
training step (``docs/speed.md``). On channels-last CUDA maps:

- :func:`pointwise_conv`: a 1x1 convolution as one GEMM over the pixels (cuBLAS);
- :func:`depthwise_conv`: a depthwise ``K x K`` 'same' convolution as Triton kernels
  (:mod:`mavit_mm.ops.depthwise`), compiled once for all sizes.

Both compute what ``F.conv2d`` computes (fp32 accumulation) and fall back to it elsewhere.

The dense convolutions that stay on cuDNN (the stem's and the downsamples') run through
:func:`conv2d_in_size_buckets`, which hands cuDNN four input sizes per octave instead of every size, and
inside :func:`cudnn_without_benchmark`: with ``cudnn.benchmark`` on (mmseg's default runtime) cuDNN would time
every algorithm for each new input size, which at ADE20K's test sizes costs more than the convolutions.
"""
import contextlib
from typing import Iterator, Optional, Tuple

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


def size_bucket(n: int) -> int:
    """``n`` rounded up to a multiple of an eighth of the power of two above it (at least 8): four sizes per
    octave (512, 640, 768, 896, 1024, 1280, ...), at most 25 % above ``n``."""
    step = max(8, 1 << max(0, n.bit_length() - 3))
    return -(-n // step) * step


def conv2d_in_size_buckets(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Tuple[int, int],
                           padding: Tuple[int, int]) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (zero padding, no dilation, one group) of ``x``
    ``(B, C_in, H, W)``, computed on ``x`` zero-padded at the bottom and right to
    ``size_bucket(H) x size_bucket(W)`` and cropped back to the unpadded output size.

    The same values: an output inside the crop reads rows up to ``H - 1 + padding``, and the rows from
    ``H`` on are zeros in both forms (here explicit, there the convolution's own padding); the same holds
    for columns, and for the gradients (the crop's gradient is zero outside it). cuDNN plans a convolution
    for every new input size (milliseconds of host time per size and pass); here it sees four sizes per
    octave. Returns a contiguous ``(B, C_out, H_out, W_out)`` map."""
    (h, w), (kh, kw) = x.shape[-2:], weight.shape[-2:]
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    hb, wb = size_bucket(h), size_bucket(w)
    if (hb, wb) != (h, w):
        x = F.pad(x, (0, wb - w, 0, hb - h))
    return F.conv2d(x, weight, bias, stride, padding)[..., :oh, :ow].contiguous()


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


__all__ = ['conv2d_in_size_buckets', 'cudnn_without_benchmark', 'depthwise_conv', 'pointwise_conv', 'size_bucket']
