"""``tools/train.py --fast-train``: one switch for the host-side costs of a training iteration.

:func:`apply_fast_train` edits a loaded config (any mmdet / mmseg / mmpretrain config, stock ones
and those ``tools/misc/swap_backbone.py`` writes included) and returns what it changed:

- optimizer: :class:`~mavit_mm.engine.optim_constructor.GroupedOptimWrapperConstructor` in place of
  mmengine's default constructor (one param group per distinct setting instead of per parameter;
  fused Adam / AdamW / SGD on CUDA);
- dataloaders: pinned memory, and persistent workers where there are workers (``tools/train.py`` then adds
  :class:`~mavit_mm.engine.loader_workers.LoaderWorkersShutdownHook`, so that the process exits at once);
- data preprocessor: non-blocking host-to-device copies, where its class takes ``non_blocking``;
- mmdet: :class:`~mavit_mm.models.det.DeviceMaxIoUAssigner` for ``MaxIoUAssigner``,
  :class:`~mavit_mm.models.det.DeviceRandomSampler` for ``RandomSampler`` and
  :class:`~mavit_mm.models.det.DeviceFCNMaskHead` for ``FCNMaskHead`` (same maths, on the device).

The losses are those of the plain config (tests compare them iteration by iteration on the CPU); only
the random draws of the samplers on a GPU differ, as between any two seeds' runs.

A config opts in with ``fast_train = True`` (the shipped MAViT configs do): ``tools/train.py`` then applies
everything but the sampler, whose GPU draws are another random stream; ``--fast-train`` applies all of it.
"""
import inspect
from typing import List, Optional

import torch
from mmengine.config import Config

from ..utils.config_walk import replace_types

DET_DROP_INS = {
    'MaxIoUAssigner': 'DeviceMaxIoUAssigner',
    'RandomSampler': 'DeviceRandomSampler',
    'FCNMaskHead': 'DeviceFCNMaskHead'
}
DET_MODULE = 'mavit_mm.models.det'


def _accepts(scope: str, type_name: str, arg: str) -> bool:
    from mmengine.registry import MODELS
    try:
        cls = MODELS.get(type_name if '.' in type_name else f'{scope}.{type_name}')
    except Exception:  # an unknown scope / type: leave the config as it is
        return False
    return cls is not None and arg in inspect.signature(cls).parameters


def apply_fast_train(cfg: Config, cuda: Optional[bool] = None, sampler: bool = True) -> List[str]:
    """Switch ``cfg`` to the fast training path in place.

    Args:
        cfg: a loaded config with ``model``, ``optim_wrapper`` and dataloaders.
        cuda: whether training runs on CUDA (pinned memory needs it); defaults to ``torch.cuda.is_available()``.
        sampler: also :class:`~mavit_mm.models.det.DeviceRandomSampler` for ``RandomSampler`` (same
            distribution, another random stream on a GPU); False keeps the stock sampler.

    Returns:
        One line per change, for the log.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    changes = []
    wrapper = cfg.get('optim_wrapper')
    if wrapper is not None:
        constructor = wrapper.get('constructor', 'DefaultOptimWrapperConstructor')
        if constructor == 'DefaultOptimWrapperConstructor':
            wrapper['constructor'] = 'GroupedOptimWrapperConstructor'
            changes.append('optim_wrapper.constructor = GroupedOptimWrapperConstructor (merged param groups, '
                           'fused optimizer on CUDA)')
        else:
            changes.append(f'optim_wrapper.constructor {constructor} kept (only the default one is replaced)')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        if cuda and not loader.get('pin_memory'):
            loader['pin_memory'] = True
            changes.append(f'{key}.pin_memory = True')
        if loader.get('num_workers', 0) > 0 and not loader.get('persistent_workers'):
            loader['persistent_workers'] = True
            changes.append(f'{key}.persistent_workers = True')
    scope = cfg.get('default_scope', 'mmengine')
    preprocessor = cfg.model.get('data_preprocessor')
    if preprocessor and _accepts(scope, preprocessor['type'], 'non_blocking'):
        if not preprocessor.get('non_blocking'):
            preprocessor['non_blocking'] = True
            changes.append('model.data_preprocessor.non_blocking = True')
    if scope == 'mmdet':
        drop_ins = DET_DROP_INS if sampler else {k: v for k, v in DET_DROP_INS.items() if k != 'RandomSampler'}
        replaced = replace_types(cfg.model, drop_ins)
        if replaced:
            imports = cfg.get('custom_imports', dict(imports=[], allow_failed_imports=False))
            names = list(imports.get('imports', []))
            if DET_MODULE not in names:
                imports['imports'] = names + [DET_MODULE]
                cfg.custom_imports = imports
            from ..models import det  # noqa: F401  (registers the drop-ins; the config's imports ran already)
            changes.append(f'model: {replaced} of ' + ' / '.join(drop_ins) + ' -> ' + ' / '.join(drop_ins.values()))
    return changes
