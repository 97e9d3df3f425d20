"""Softmax attention on rotary-encoded queries and keys (the release's flag ``'v'``)."""
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from mavit_mm.ops.rotary import rotate_to
from mavit_mm.registry import MODELS
from .attention_base import ConvAttentionBase

# SDPA's backends but cuDNN's. cuDNN's attention builds an execution graph for each new sequence length:
# at detection's changing input sizes that cost about 10 ms of host time per forward call and 5 ms per
# backward call (an H100, torch 2.11, cuDNN 9), eight blocks of MAViT-T each iteration. The flash and
# memory-efficient kernels take any length as an argument; the math one is the fallback where neither applies.
SDPA_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def rope_softmax_attention(q: Tensor,
                           k: Tensor,
                           v: Tensor,
                           sin: Tensor,
                           cos: Tensor,
                           scale: float,
                           fused_rotary: bool = False) -> Tensor:
    """``softmax(s * rot(q) rot(k)^T) v`` per head through torch's fused SDPA kernels.

    Args:
        q, k, v (Tensor): ``(B, heads, N, head_dim)``.
        sin, cos (Tensor): Rotary tables ``(N, head_dim)``.
        scale (float): ``head_dim ** -0.5``.
        fused_rotary (bool): Rotate q and k with the Triton kernels where they run (the same values;
            :func:`mavit_mm.ops.rotary.rotate_to`). Defaults to False.

    Returns:
        Tensor: ``(B, heads, N, head_dim)``.
    """
    q = rotate_to(q, sin, cos, v.dtype, fused_rotary)
    k = rotate_to(k, sin, cos, v.dtype, fused_rotary)
    # The flash and memory-efficient kernels need a unit stride on head_dim; v arrives as a transposed
    # view of the conv output, and without the copy SDPA falls back to the math kernel, which forms
    # the N x N matrix (37 GB at a 1024^2 image's stage-1 size; measured on an H100).
    with sdpa_kernel(list(SDPA_BACKENDS)):
        return F.scaled_dot_product_attention(q, k, v.contiguous(), scale=scale)


@MODELS.register_module()
class RoPESoftmaxAttention(ConvAttentionBase):
    """MAViT's softmax attention block, quadratic in the number of tokens.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
    """

    def attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        return rope_softmax_attention(q, k, v, sin, cos, self.scale, fused_rotary=self.use_kernels)
