"""Registration glue.

MAViT's modules are registered in mmengine's *root* ``MODELS`` registry. mmdet,
mmseg and mmpretrain each create ``MODELS`` as a child of that root, and a
child's ``get`` falls back to its parent, so this single registration makes
``type='MAViT'`` buildable under ``default_scope`` ``mmdet``, ``mmseg`` and
``mmpretrain`` alike, without importing any of those libraries here.
"""
from mmengine.registry import MODELS

__all__ = ['MODELS']
