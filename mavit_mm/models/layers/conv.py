"""MAViT's convolutions, through the fast path's kernels where they apply.

The layers keep plain ``nn.Conv2d`` modules (the release's checkpoint keys; FLOPs counters that hook
``nn.Conv2d`` count them) and call them through :func:`pointwise` / :func:`depthwise` (the blocks') and
:func:`dense` (the stem's and the downsamples'): with ``fast`` (the backbone's ``fast_path``) a CUDA map goes
to :mod:`mavit_mm.ops.conv`, which needs no cuDNN plan per input size (1x1, depthwise) or far fewer (dense);
anything else to the module itself.

Under autocast, :func:`autocast_weights_ahead` casts a stage's convolution weights and biases to the autocast
dtype together (:func:`mavit_mm.ops.cast.grouped_cast`) and the helpers take those casts instead of casting
each one on its own.
"""
import contextlib
from typing import Dict, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mavit_mm.ops.cast import grouped_cast
from mavit_mm.ops.conv import conv2d_in_size_buckets, depthwise_conv, pointwise_conv
from mavit_mm.ops.depthwise import kernels_take
from mavit_mm.ops.mala import kernels_can_run

# id(parameter) -> its cast to the autocast dtype, while autocast_weights_ahead is active
_AHEAD: Dict[int, Tensor] = {}


@contextlib.contextmanager
def autocast_weights_ahead(modules: Iterable[nn.Module], x: Tensor) -> Iterator[None]:
    """While autocast is on for ``x``'s device: cast the fp32 weights and biases of every ``nn.Conv2d`` under
    ``modules`` to the autocast dtype in one grouped cast (one launch each way instead of one per tensor), for
    :func:`pointwise`, :func:`depthwise` and :func:`dense` to use inside the block. The casts are the ones
    autocast would make (the same values, the gradients the same); convolutions run outside the block cast as
    before. Does nothing without autocast or inside a ``torch.compile`` trace (which fuses the casts itself)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or torch.compiler.is_compiling():
        yield
        return
    params = [
        p for m in modules for conv in m.modules() if isinstance(conv, nn.Conv2d) for p in (conv.weight, conv.bias)
        if p is not None and p.dtype == torch.float32 and p.device == x.device and id(p) not in _AHEAD
    ]
    if not params:
        yield
        return
    casts = grouped_cast(params, torch.get_autocast_dtype(device))
    _AHEAD.update(zip(map(id, params), casts))
    try:
        yield
    finally:
        for p in params:
            _AHEAD.pop(id(p), None)


def _ahead(conv: nn.Module) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
    """``conv``'s weight and bias as :func:`autocast_weights_ahead` cast them; None where it did not."""
    weight = _AHEAD.get(id(getattr(conv, 'weight', None))) if _AHEAD else None
    if weight is None:
        return None
    return weight, (_AHEAD.get(id(conv.bias), conv.bias) if conv.bias is not None else None)


def _conv(conv: nn.Conv2d, x: Tensor, ahead: Optional[Tuple[Tensor, Optional[Tensor]]]) -> Tensor:
    """``conv(x)``, with the weights cast ahead where there are (zero padding: every MAViT convolution)."""
    if ahead is not None and conv.padding_mode == 'zeros':
        return F.conv2d(x, *ahead, conv.stride, conv.padding, conv.dilation, conv.groups)
    return conv(x)


def pointwise(conv: nn.Conv2d, x: Tensor, fast: bool) -> Tensor:
    """A 1x1 ``conv`` of ``x`` ``(B, C_in, H, W)``: one GEMM over the pixels on the fast path."""
    ahead = _ahead(conv)
    if fast and x.is_cuda:
        return pointwise_conv(x, *(ahead or (conv.weight, conv.bias)))
    return _conv(conv, x, ahead)


def depthwise(conv: nn.Conv2d, x: Tensor, fast: bool, residual: bool = False) -> Tensor:
    """A depthwise stride-1 'same' ``conv`` of ``x`` ``(B, C, H, W)`` (``residual``: ``x + conv(x)``): Triton
    kernels on the fast path, the sum inside them."""
    ahead = _ahead(conv)
    if fast and kernels_take(x, conv.weight):
        return depthwise_conv(x, *(ahead or (conv.weight, conv.bias)), residual=residual)
    return x + _conv(conv, x, ahead) if residual else _conv(conv, x, ahead)


def dense(conv: nn.Conv2d, x: Tensor, fast: bool) -> Tensor:
    """A dense ``conv`` (the stem's, the downsamples') of ``x`` ``(B, C_in, H, W)``: on the fast path, where its
    kernels run (CUDA; the CPU under Triton's interpreter, for tests), in size buckets
    (:func:`mavit_mm.ops.conv.conv2d_in_size_buckets`: the same values, fewer cuDNN plans); not inside a
    ``torch.compile`` trace, whose symbolic sizes the buckets' integer arithmetic does not take."""
    ahead = _ahead(conv)
    plain = conv.padding_mode == 'zeros' and conv.groups == 1 and conv.dilation == (1, 1)
    if fast and plain and kernels_can_run(x) and not torch.compiler.is_compiling():
        return conv2d_in_size_buckets(x, *(ahead or (conv.weight, conv.bias)), conv.stride, conv.padding)
    return _conv(conv, x, ahead)
