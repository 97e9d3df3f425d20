"""An optimizer-wrapper constructor that keeps mmengine's paramwise rules but not its one group per parameter.

mmengine's ``DefaultOptimWrapperConstructor`` with a ``paramwise_cfg`` (every config here: no weight decay
on norms) gives each parameter a param group of its own. torch's optimizers run their ``foreach`` /
``fused`` kernels per group, so Mask R-CNN MAViT-T's 318 parameters cost 318 small launches per update, paid on
the host. :class:`GroupedOptimWrapperConstructor` applies exactly the same rules, then merges the groups
whose hyper-parameters are equal (``lr``, ``weight_decay``, any custom key), and on CUDA asks
Adam / AdamW / SGD for their fused kernels. The update of every parameter is unchanged.
"""
import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS
from torch import nn

# torch optimizers with a ``fused`` implementation (CUDA tensors, float dtypes)
FUSED_OPTIMIZERS = ('Adam', 'AdamW', 'SGD')


def merge_param_groups(groups: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merge param groups with equal settings, in order of first appearance.

    Args:
        groups: param groups as mmengine builds them: ``{'params': [p, ...], 'lr': ..., ...}``.

    Returns:
        One group per distinct set of non-``params`` items, its params in their original order.
    """
    merged: Dict[Tuple, Dict[str, Any]] = {}
    for group in groups:
        settings = {k: v for k, v in group.items() if k != 'params'}
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        if key not in merged:
            merged[key] = dict(settings, params=[])
        merged[key]['params'].extend(group['params'])
    return list(merged.values())


def check_no_shared_params(groups: List[Dict[str, Any]]) -> None:
    """Raise what torch raises when the stock constructor's groups share a parameter.

    mmengine's constructor gives each parameter its own group, so a parameter reached through two modules
    (without ``paramwise_cfg.bypass_duplicate``) lands in two groups and torch refuses the optimizer.
    Merged, both entries would sit in one group, where torch only warns and then applies the update twice.
    """
    seen = set()
    for group in groups:
        for p in group['params']:
            if id(p) in seen:
                raise ValueError('some parameters appear in more than one parameter group (a parameter shared by '
                                 'two modules: set paramwise_cfg=dict(bypass_duplicate=True) to optimise it once, '
                                 'as with the default constructor)')
            seen.add(id(p))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class GroupedOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with its param groups merged, and fused kernels on CUDA.

    Use it as ``optim_wrapper = dict(constructor='GroupedOptimWrapperConstructor', ...)``, or through
    ``tools/train.py --fast-train``. The ``optimizer`` and ``paramwise_cfg`` keep their meaning.

    ``fused=True`` is added for Adam / AdamW / SGD when every parameter to optimise is a floating CUDA
    tensor and the optimizer config sets neither ``fused`` nor ``foreach`` (what a config sets wins).

    Differences from the default constructor that code reading the optimizer can see (the updates are the
    same):

    - ``optimizer.param_groups`` holds one group per distinct setting, so ``optim_wrapper.get_lr()`` /
      ``get_momentum()`` list one value per merged group, not per parameter. The first entry, which
      mmengine logs as ``lr`` / ``momentum``, is the same (the first parameter's group); the set of
      values is the same. Param schedulers scale every group alike and see no difference.
    - The optimizer's state dict indexes parameters by group, so a checkpoint saved with the default
      constructor resumes only with the default constructor (and likewise for this one); weights load
      either way.
    - A parameter shared by two modules raises the ``ValueError`` torch raises under the default
      constructor (:func:`check_no_shared_params`), never a silent double update.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[float] = None) -> None:
        if prefix:  # a recursive call of the stock rules on a submodule
            return super().add_params(params, module, prefix, is_dcn_module)
        per_param: List[dict] = []
        super().add_params(per_param, module, prefix, is_dcn_module)
        check_no_shared_params(params + per_param)
        merged = merge_param_groups(per_param)
        print_log(f'{type(self).__name__}: {len(per_param)} param groups merged into {len(merged)}', logger='current')
        params.extend(merged)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        saved = self.optimizer_cfg
        if self._can_fuse(model.module if hasattr(model, 'module') else model):
            self.optimizer_cfg = dict(saved, fused=True)
            print_log(f'{type(self).__name__}: {saved["type"]}(fused=True)', logger='current')
        try:
            return super().__call__(model)
        finally:
            self.optimizer_cfg = saved

    def _can_fuse(self, model: nn.Module) -> bool:
        cfg = self.optimizer_cfg
        name = cfg['type'] if isinstance(cfg['type'], str) else cfg['type'].__name__
        if name.split('.')[-1] not in FUSED_OPTIMIZERS or 'fused' in cfg or 'foreach' in cfg:
            return False
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            cls = registry.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
        if cls is None or not issubclass(cls, torch.optim.Optimizer) or \
                'fused' not in inspect.signature(cls).parameters:
            return False
        trained = [p for p in model.parameters() if p.requires_grad]
        return bool(trained) and all(p.is_cuda and p.is_floating_point() for p in trained)
