"""Stop the dataloaders' persistent workers when a run ends, not at interpreter exit.

A ``DataLoader`` with ``persistent_workers=True`` and ``pin_memory=True`` (what ``fast_train`` sets) keeps
its workers waiting for the next epoch. Nothing tells them to stop before the interpreter exits, where
torch joins each of them with a 5 s timeout (pytorch/pytorch#81794): a run that has finished its work and
saved its last checkpoint then takes another 5 s per worker to exit (10 s for mmdet's two training workers,
20 s for mmseg's four). :class:`LoaderWorkersShutdownHook` shuts the workers down in ``after_run``, while the
process still runs normally, so that they exit at once.
"""
from typing import Iterable, Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch.utils.data import DataLoader

LOOPS = ('_train_loop', '_val_loop', '_test_loop')


def shut_down_workers(loader: Optional[DataLoader]) -> bool:
    """Stop the persistent worker processes of ``loader``, if it has any running; the next ``iter(loader)``
    starts new ones. Returns whether there were workers to stop."""
    iterator = getattr(loader, '_iterator', None)
    if iterator is None or not hasattr(iterator, '_shutdown_workers'):
        return False
    iterator._shutdown_workers()
    loader._iterator = None
    return True


def run_loaders(runner) -> Iterable[DataLoader]:
    """The dataloaders of the loops ``runner`` has built (a loop not built yet is still its config dict)."""
    for name in LOOPS:
        loader = getattr(getattr(runner, name, None), 'dataloader', None)
        if isinstance(loader, DataLoader):
            yield loader


def needs_shutdown(cfg) -> bool:
    """Whether a dataloader of ``cfg`` pins memory with persistent workers (the pairing that stalls exit)."""
    loaders = [cfg.get(key) or {} for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return any(
        loader.get('pin_memory') and loader.get('persistent_workers') and loader.get('num_workers', 0) > 0
        for loader in loaders)


@HOOKS.register_module()
class LoaderWorkersShutdownHook(Hook):
    """Shut the dataloaders' persistent workers down when ``runner.train()`` / ``.val()`` / ``.test()`` ends
    (:func:`shut_down_workers`), so that the process exits at once instead of 5 s per worker later."""

    priority = 'VERY_LOW'

    def after_run(self, runner) -> None:
        for loader in run_loaders(runner):
            shut_down_workers(loader)


__all__ = ['LoaderWorkersShutdownHook', 'needs_shutdown', 'run_loaders', 'shut_down_workers']
