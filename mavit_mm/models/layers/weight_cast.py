"""Autocast's weight casts for a group of convolutions, in one multi-tensor launch.

Under ``torch.autocast`` every convolution casts its fp32 weight and bias to the autocast dtype
(one kernel each in the forward, one more each for their gradients in the backward). A MAViT
block has seven convolutions, so that is 28 small launches per block and step. Casting the
block's 14 tensors together gives the same bf16 / fp16 values (the same rounding as
``Tensor.to``) and the same fp32 gradients, in one launch each way.
"""
import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def autocast_weight_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast casts a convolution's weights to for an input like ``x``, or None where
    nothing is to be gained: autocast off for ``x``'s device, or inside a ``torch.compile`` trace or
    a JIT / ONNX trace, whose own passes handle the casts."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    dtype = torch.get_autocast_dtype(device)
    return dtype if dtype in _LOW_PRECISION else None


class _CastTogether(torch.autograd.Function):
    """``tensors`` -> copies in ``dtype``; the gradients come back in each input's dtype."""

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *tensors: Tensor) -> Tuple[Tensor, ...]:  # type: ignore[override]
        ctx.dtypes = [t.dtype for t in tensors]
        outs = [torch.empty_like(t, dtype=dtype) for t in tensors]
        torch._foreach_copy_(outs, list(tensors))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:  # type: ignore[override]
        wanted = [i for i, g in enumerate(grads) if g is not None and ctx.needs_input_grad[i + 1]]
        out: List[Optional[Tensor]] = [None] * len(grads)
        if wanted:
            src = [grads[i] for i in wanted]
            dst = [torch.empty_like(g, dtype=ctx.dtypes[i]) for i, g in zip(wanted, src)]
            torch._foreach_copy_(dst, src)
            for i, g in zip(wanted, dst):
                out[i] = g
        return (None, *out)


@contextlib.contextmanager
def weights_cast_together(convs: Sequence[nn.Module], x: Tensor) -> Iterator[None]:
    """Within the block, ``convs``' fp32 ``weight`` / ``bias`` read as copies in autocast's dtype,
    made in one launch (see the module docstring); autocast then finds them already cast.

    Does nothing where :func:`autocast_weight_dtype` gives None or a weight is not fp32 (frozen or
    not, every weight takes part: autocast would cast it either way). The modules' own parameters
    are back in place when the block exits, also on an exception.
    """
    dtype = autocast_weight_dtype(x)
    slots = [(m, name) for m in convs for name in ('weight', 'bias') if m._parameters.get(name) is not None]
    if dtype is None or not slots or any(m._parameters[n].dtype != torch.float32 for m, n in slots):
        yield
        return
    params = [m._parameters[n] for m, n in slots]
    casts = _CastTogether.apply(dtype, *params)
    try:
        # a plain dict write: no registration hooks fire and the parameters stay what the
        # optimizer, the state dict and CUDA-graph keys see outside this block
        for (m, n), c in zip(slots, casts):
            m._parameters[n] = c
        yield
    finally:
        for (m, n), p in zip(slots, params):
            m._parameters[n] = p
