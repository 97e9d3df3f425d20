"""LoaderWorkersShutdownHook: persistent dataloader workers stop when the run ends, so that the process exits
at once (torch otherwise waits 5 s per worker at exit when memory is pinned)."""
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mavit_mm.config.run_config import add_loader_shutdown_hook
from mavit_mm.engine.loader_workers import needs_shutdown
from helpers import make_runner


class RecordWorkers(Hook):
    workers = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.workers:
            self.workers.extend(runner.train_dataloader._iterator._workers)


@pytest.mark.parametrize('hook', [True, False], ids=['hook', 'no-hook'])
def test_persistent_workers_stop_when_the_run_ends(tmp_path, hook):
    RecordWorkers.workers = []
    hooks = [RecordWorkers()] + ([dict(type='LoaderWorkersShutdownHook')] if hook else [])
    runner = make_runner(tmp_path, loader=dict(num_workers=2, persistent_workers=True), custom_hooks=hooks)
    runner.train()
    workers = RecordWorkers.workers
    assert len(workers) == 2 and runner.iter == 6
    if hook:
        assert not any(w.is_alive() for w in workers)
        assert runner.train_dataloader._iterator is None
        return
    # without the hook they wait for another epoch until the interpreter exits
    assert all(w.is_alive() for w in workers)
    runner.train_dataloader._iterator._shutdown_workers()


def test_the_hook_is_added_where_memory_is_pinned_with_persistent_workers():
    loader = dict(num_workers=2, persistent_workers=True, pin_memory=True)
    cfg = Config(dict(train_dataloader=loader, val_dataloader=dict(loader, persistent_workers=False)))
    assert needs_shutdown(cfg)
    add_loader_shutdown_hook(cfg)
    add_loader_shutdown_hook(cfg)
    assert cfg.custom_hooks == [dict(type='LoaderWorkersShutdownHook')]
    unpinned_loaders = [
        dict(loader, pin_memory=False),
        dict(loader, num_workers=0),
        dict(loader, persistent_workers=False)
    ]
    for unpinned in unpinned_loaders:
        cfg = Config(dict(train_dataloader=unpinned, custom_hooks=[dict(type='EmptyCacheHook')]))
        assert not needs_shutdown(cfg)
        add_loader_shutdown_hook(cfg)
        assert cfg.custom_hooks == [dict(type='EmptyCacheHook')]


EXIT_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from torch.utils.data import DataLoader, TensorDataset
    from mavit_mm.engine.loader_workers import shut_down_workers
    loader = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=8, num_workers=2, persistent_workers=True,
                        pin_memory=True)
    for _ in loader:
        pass
    if sys.argv[1] == 'stop':
        shut_down_workers(loader)
    print(time.time(), flush=True)
""")


@pytest.mark.skipif(not torch.cuda.is_available(), reason='pinned memory needs CUDA')
def test_pinned_persistent_workers_no_longer_delay_the_exit():
    delays = {}
    for mode in ('keep', 'stop'):
        out = subprocess.run([sys.executable, '-c', EXIT_SCRIPT, mode], capture_output=True, text=True, check=True)
        delays[mode] = time.time() - float(out.stdout.split()[-1])
    assert delays['keep'] > 8, delays  # torch's 5 s join timeout per worker at exit
    assert delays['stop'] < 3, delays
