"""Cast many tensors to one dtype in a few kernel launches: ``grouped_cast(tensors, dtype)``.

Under autocast every convolution casts its fp32 weight and bias to the autocast dtype on its own (a
launch each), and its backward casts their gradients back (a launch each): 28 launches per MAViT block,
each with its host-side dispatch and autograd node. :func:`grouped_cast` does a whole stage's in one
multi-tensor copy each way (``torch._foreach_copy_``). The values are the same: a cast rounds each
element to nearest-even whether it runs alone or in a group, and the gradients widen exactly.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def _copies(tensors: Sequence[Tensor], dtype: torch.dtype) -> List[Tensor]:
    """``[t.to(dtype) for t in tensors]`` as views of one new buffer, filled by one multi-tensor copy."""
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=tensors[0].device)
    outs = [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
    torch._foreach_copy_(outs, list(tensors))
    return outs


class _GroupedCast(torch.autograd.Function):

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *tensors: Tensor) -> Tuple[Tensor, ...]:
        ctx.source_dtype = tensors[0].dtype
        return tuple(_copies(tensors, dtype))

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        wanted = [i for i, g in enumerate(grads) if g is not None and ctx.needs_input_grad[i + 1]]
        out: List[Optional[Tensor]] = [None] * len(grads)
        if wanted:
            for i, g in zip(wanted, _copies([grads[i] for i in wanted], ctx.source_dtype)):
                out[i] = g
        return (None, *out)


def grouped_cast(tensors: Sequence[Tensor], dtype: torch.dtype) -> List[Tensor]:
    """``[t.to(dtype) for t in tensors]``, differentiable, in one multi-tensor copy forward and one
    backward.

    Args:
        tensors: Tensors of one dtype on one device (a stage's convolution weights and biases).
        dtype: The dtype to cast to.

    Returns:
        list[Tensor]: The casts, in order, as views of one buffer; their gradients reach ``tensors`` in
        ``tensors``' dtype, as views of one buffer too.
    """
    if not tensors:
        return []
    if len({(t.dtype, t.device) for t in tensors}) != 1:
        raise ValueError('grouped_cast takes tensors of one dtype on one device, got '
                         f'{sorted({(str(t.dtype), str(t.device)) for t in tensors})}')
    return list(_GroupedCast.apply(dtype, *tensors))


__all__ = ['grouped_cast']
