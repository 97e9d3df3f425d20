"""Learning-rate schedules of the release's recipes that mmengine's schedulers cannot express."""
import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class EpochWarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """timm's ``CosineLRScheduler`` as DeiT's ``main.py`` (and the MAViT release) steps it: once per epoch.

    At epoch ``e`` (counted from ``begin``), for a param group whose lr is ``base``::

        e <  warmup_epochs:  warmup_lr + e * (base - warmup_lr) / warmup_epochs
        e >= warmup_epochs:  eta_min + (base - eta_min) * (1 + cos(pi * e / T_max)) / 2

    The cosine runs from epoch 0 (timm's ``warmup_prefix=False``): it is not restarted after the warm-up,
    which mmengine's ``LinearLR`` + ``CosineAnnealingLR`` pair would do.

    Args:
        optimizer: the wrapped optimizer.
        T_max (int): epochs of the cosine (the training length).
        warmup_epochs (int): epochs of the linear warm-up.
        warmup_lr (float): lr of the first epoch (absolute).
        eta_min (float): lr at the end of the cosine (absolute).
        begin, end, last_step, by_epoch, verbose: as mmengine's schedulers.
    """

    def __init__(self,
                 optimizer,
                 T_max: int,
                 warmup_epochs: int = 0,
                 warmup_lr: float = 0.0,
                 eta_min: float = 0.0,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False) -> None:
        if T_max <= 0 or warmup_epochs < 0 or warmup_epochs >= T_max:
            raise ValueError(f'EpochWarmupCosineLR needs 0 <= warmup_epochs < T_max, got '
                             f'warmup_epochs={warmup_epochs}, T_max={T_max}')
        self.T_max, self.warmup_epochs = T_max, warmup_epochs
        self.warmup_lr, self.eta_min = warmup_lr, eta_min
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    def _lr(self, base: float, step: int) -> float:
        if step < self.warmup_epochs:
            return self.warmup_lr + step * (base - self.warmup_lr) / self.warmup_epochs
        return self.eta_min + 0.5 * (base - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max))

    def _get_value(self) -> list:
        return [self._lr(base, self.last_step) for base in self.base_values]
