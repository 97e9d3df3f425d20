"""mmpretrain glue: the release's classification head and a fix for importing mmpretrain.models.

Classification configs import this module first::

    custom_imports = dict(imports=['mavit_mm.classification', 'mavit_mm'], allow_failed_imports=False)

It is kept out of ``mavit_mm``'s core so that ``import mavit_mm`` never needs mmpretrain.
"""
from mavit_mm.utils.mmpretrain_compat import disable_broken_multimodal

disable_broken_multimodal()  # before anything below imports mmpretrain.models

from .head import MAViTClsHead  # noqa: E402

__all__ = ['MAViTClsHead', 'disable_broken_multimodal']
