"""MALA as a drop-in attention for mmpretrain's DeiT and Swin (the paper's Table 9)."""
from .attention import MALAMultiheadAttention, WindowMALA, windowed_mala
from .backbones import MALASwinTransformer, MALAVisionTransformer

__all__ = ['MALAMultiheadAttention', 'WindowMALA', 'windowed_mala', 'MALAVisionTransformer', 'MALASwinTransformer']
