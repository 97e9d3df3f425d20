"""MAViT's magnitude-aware linear attention layer; the equation and its kernels are :mod:`mavit_mm.ops.mala`."""
from torch import Tensor

from mavit_mm.ops.mala import mala
from mavit_mm.registry import MODELS
from .attention_base import ConvAttentionBase


@MODELS.register_module()
class MALAttention(ConvAttentionBase):
    """MAViT's magnitude-aware linear attention layer (the release's flag ``'l'``), linear in tokens.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
    """

    def attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        return mala(q, k, v, sin, cos, self.scale, backend='auto' if self.use_kernels else 'naive')
