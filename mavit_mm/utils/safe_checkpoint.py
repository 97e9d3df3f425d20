"""Keep torch's weights-only checkpoint loader on, and teach it what Runner checkpoints hold.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. mmengine 0.10.7 calls
``torch.load`` without that argument, so checkpoints its Runner wrote (they hold a
``message_hub`` of :class:`~mmengine.logging.HistoryBuffer` objects with numpy arrays)
fail to load: resume, ``load_from`` and Pretrained init of a local Runner file all break.

Instead of turning the safe loader off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which loads
any pickle), :func:`register_runner_checkpoint_types` allow-lists exactly those types. A pickle
that asks for anything else, e.g. ``os.system``, is still refused by torch.
"""
import pickle
from typing import Any, List

import numpy as np
import torch

_REGISTERED = False


def _numpy_types() -> List[Any]:
    """The numpy reconstruction helpers and dtype classes pickled arrays and scalars refer to."""
    core = getattr(np, '_core', None) or np.core  # numpy 2 moved core to _core
    types: List[Any] = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        types += [getattr(dtypes, name) for name in dtypes.__all__]
    return types


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``getattr`` in the unpickler, limited to what HistoryBuffer pickles need.

    A pickled HistoryBuffer stores its statistics table as ``getattr(HistoryBuffer, 'mean')``
    and the like. Allowing the real ``getattr`` would let a crafted pickle walk from any
    allowed object to arbitrary code, so only those look-ups are served.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'checkpoint refused: it asks for getattr({obj!r}, {name!r}), which '
                                 'is not part of an mmengine Runner checkpoint')


def register_runner_checkpoint_types() -> None:
    """Allow-list, once per process, the types of mmengine Runner checkpoints for weights-only loading."""
    global _REGISTERED
    if _REGISTERED or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    import codecs
    from collections import Counter

    from mmengine.logging import HistoryBuffer
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        Counter,
        codecs.encode,
        *_numpy_types(),
        (history_buffer_getattr, '__builtin__.getattr'),
        (history_buffer_getattr, 'builtins.getattr'),
    ])
    _REGISTERED = True
