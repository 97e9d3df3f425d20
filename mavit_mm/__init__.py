"""mavit-mm: MAViT backbones for OpenMMLab 2.x (mmdet, mmseg, mmpretrain).

``custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)`` in a config
registers ``MAViT`` in mmengine's root registry, the ``local_atomic`` file backend for
checkpoints that are never half-written, and allow-lists the types mmengine's
Runner checkpoints hold for torch's weights-only loader.
"""
from . import engine  # noqa: F401  (registers the release's epoch-wise warm-up + cosine lr schedule)
from .models import MALAttention, MAViT, RoPESoftmaxAttention
from .utils import fileio  # noqa: F401  (registers mmengine's 'local_atomic' file backend)
from .utils.mmpretrain_compat import disable_broken_multimodal
from .utils.safe_checkpoint import register_runner_checkpoint_types
from .version import __version__

register_runner_checkpoint_types()
disable_broken_multimodal(strict=False)  # mmdet.models imports mmpretrain.models when it is installed

__all__ = ['MAViT', 'MALAttention', 'RoPESoftmaxAttention', '__version__']
