"""Which of the fast path's Triton kernels a MAViT module tree launches: the jobs of
:func:`mavit_mm.ops.warmup.warm_up`, which compiles them in parallel before the first step."""
from typing import List

import torch
from torch import nn

from mavit_mm.ops.warmup import Job, dtype_name
from .mala import MALAttention
from .softmax_attention import RoPESoftmaxAttention

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _depthwise(conv: nn.Module) -> bool:
    """A stride-1 'same' depthwise convolution with an odd square kernel (what the kernels take)."""
    return (isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2 == 1 and conv.stride == (1, 1))


def _specialization(n: int) -> int:
    """A representative of ``n``'s class under Triton's specialization of integer arguments (on being 1
    or a multiple of 16): one job per compiled variant, not one per layer width."""
    return n if n == 1 else 16 if n % 16 == 0 else 2


def kernel_jobs(model: nn.Module, dtype: torch.dtype, train: bool) -> List[Job]:
    """The kernel variants ``model``'s fast path launches with activations in ``dtype``: the MALA
    forward (and ``train``: backward) per head width and class of head count, the softmax stages' rotary
    kernels likewise, and per depthwise kernel size and class of channel count the forward (and ``train``:
    the input- and weight-gradient kernels), in the residual form (``x + conv(x)``) for the convolutions a
    module names in its ``residual_convs``."""
    if dtype not in _KERNEL_DTYPES:
        return []
    name = dtype_name(dtype)
    jobs = set()
    for m in model.modules():
        if isinstance(m, MALAttention) and m.use_kernels and m.head_dim % 2 == 0 and m.head_dim <= 128:
            jobs.update(('mala', m.head_dim, _specialization(m.num_heads), name, what)
                        for what in (('forward', 'backward') if train else ('forward', )))
        if isinstance(m, RoPESoftmaxAttention) and m.use_kernels and m.head_dim % 2 == 0:
            jobs.update(('rotary', m.head_dim, _specialization(m.num_heads), name, what)
                        for what in (('forward', 'backward') if train else ('forward', )))
        if getattr(m, 'fast_convs', False):
            residual = getattr(m, 'residual_convs', ())
            for child, conv in m.named_children():
                if _depthwise(conv):
                    k, c = conv.kernel_size[0], _specialization(conv.in_channels)
                    forward, backward = 'forward', ('input_grad', 'grad_weight')
                    if child in residual:
                        forward, backward = 'residual', ('residual_input_grad', 'residual_grad_weight')
                    jobs.add(('depthwise', k, c, name, forward if conv.bias is not None else forward + '_nobias'))
                    if train:
                        jobs.update(('depthwise', k, c, name, what) for what in backward)
    return sorted(jobs)
