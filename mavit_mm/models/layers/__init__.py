"""Building blocks of MAViT: rotary encoding, the two attentions and the block."""
from .attention_base import ConvAttentionBase
from .block import ATTENTIONS, ConvFFN, LayerNorm2d, MAViTBlock
from .mala import MALAttention, mala_attention
from .rotary import RotaryEmbedding2d, apply_rotary, rotate_pairs
from .softmax_attention import RoPESoftmaxAttention, rope_softmax_attention

__all__ = [
    'ATTENTIONS', 'ConvAttentionBase', 'ConvFFN', 'LayerNorm2d', 'MALAttention', 'MAViTBlock',
    'RoPESoftmaxAttention', 'RotaryEmbedding2d', 'apply_rotary', 'mala_attention',
    'rope_softmax_attention', 'rotate_pairs'
]
