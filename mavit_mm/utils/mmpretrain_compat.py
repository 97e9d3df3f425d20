"""Make ``mmpretrain.models`` importable beside a recent transformers.

mmpretrain 1.2.0 imports its multimodal models (BLIP, BLIP-2, OFA, ...) whenever pycocotools and
transformers >= 4.28 are installed. transformers 5 removed names those models import
(``apply_chunking_to_forward``, ``find_pruneable_heads_and_indices``, ``prune_linear_layer``,
``GenerationMixin`` from ``transformers.modeling_utils``), and the import of ``mmpretrain.models``
then fails for everyone with ``TypeError: NoneType takes no arguments``.

:func:`disable_broken_multimodal` checks for those names first and, when they are gone, sets
mmpretrain's own ``WITH_MULTIMODAL`` switch off, so mmpretrain registers placeholders for the
multimodal models (as it does when transformers is absent) and the rest imports normally. Nothing in
site-packages is edited; the multimodal models stay unusable, as they were.

mmdet's ``mmdet.models`` imports ``mmpretrain.models`` too (its ReID preprocessor) whenever mmpretrain is
installed, so detection configs break the same way: ``import mavit_mm`` (every config's
``custom_imports``) applies the fix when mmpretrain and transformers are both installed and
``mmpretrain.models`` is not imported yet. Neither package is needed for ``import mavit_mm``.
"""
import importlib
import importlib.util
import sys

# What mmpretrain 1.2.0's multimodal models import from transformers at module level.
NEEDED = {
    'transformers.modeling_utils': ('PreTrainedModel', 'apply_chunking_to_forward', 'find_pruneable_heads_and_indices',
                                    'prune_linear_layer', 'GenerationMixin'),
}


def transformers_has_what_mmpretrain_needs() -> bool:
    for module_name, names in NEEDED.items():
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - any failure means the multimodal models cannot import
            return False
        if not all(hasattr(module, name) for name in names):
            return False
    return True


def disable_broken_multimodal(strict: bool = True) -> bool:
    """Switch mmpretrain's multimodal imports off if transformers lacks what they need.

    Args:
        strict (bool): Raise if ``mmpretrain.models`` was imported (broken) before this call.

    Returns:
        bool: Whether the switch was turned off by this call.
    """
    if importlib.util.find_spec('mmpretrain') is None or importlib.util.find_spec('transformers') is None:
        return False
    if 'mmpretrain.models' in sys.modules and not strict:
        return False
    import mmpretrain.utils.dependency as dependency
    if not dependency.WITH_MULTIMODAL or transformers_has_what_mmpretrain_needs():
        return False
    if 'mmpretrain.models' in sys.modules:
        raise ImportError('mmpretrain.models was imported before mavit_mm.classification could make it '
                          'work with the installed transformers: put "mavit_mm.classification" first '
                          'in custom_imports')
    dependency.WITH_MULTIMODAL = False
    return True
