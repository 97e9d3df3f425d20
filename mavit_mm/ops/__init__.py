"""Tensor operations of MAViT, each a plain PyTorch form beside its fused kernels.

``ops`` depends on torch only (and Triton, where installed): the layers in :mod:`mavit_mm.models`
call these functions, never the other way round. MALA is :func:`mavit_mm.ops.mala.mala`.
"""
from . import mala, rotary

__all__ = ['mala', 'rotary']
