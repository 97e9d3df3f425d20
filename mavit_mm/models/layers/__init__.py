"""Building blocks of MAViT: rotary tables, the two attentions and the block."""
from mavit_mm.ops.mala import mala_attention
from mavit_mm.ops.rotary import apply_rotary, rotate_pairs
from .attention_base import ConvAttentionBase
from .block import ATTENTIONS, ConvFFN, LayerNorm2d, MAViTBlock
from .mala import MALAttention
from .rotary import RotaryEmbedding2d
from .softmax_attention import RoPESoftmaxAttention, rope_softmax_attention

__all__ = [
    'ATTENTIONS', 'ConvAttentionBase', 'ConvFFN', 'LayerNorm2d', 'MALAttention', 'MAViTBlock', 'RoPESoftmaxAttention',
    'RotaryEmbedding2d', 'apply_rotary', 'mala_attention', 'rope_softmax_attention', 'rotate_pairs'
]
