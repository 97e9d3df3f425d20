import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        '--gpu-full',
        action='store_true',
        help='run the full GPU sweep (every arch, every kernel layout, torch.compile for all '
        'archs); by default a GPU run takes a representative subset, in minutes')
    parser.addoption(
        '--swap-sweep-full',
        action='store_true',
        help='swap MAViT into every config mmdet and mmseg ship (about 20 minutes on 2 cores); by default one '
        'config per model family')


def pytest_configure(config):
    # pytest-xdist workers (``-n N``) share the machine's cores: N processes each running torch's default
    # thread pool (one thread per core) oversubscribe the CPU and make CPU-side tests many times slower
    # (tools run as subprocesses inherit the share through OMP_NUM_THREADS, unless it is set already)
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        threads = max(1, (os.cpu_count() or workers) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))


def pytest_collection_modifyitems(config, items):
    for option, marker in (('--gpu-full', 'gpu_full'), ('--swap-sweep-full', 'swap_sweep_full')):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f'part of a full sweep: pass {option}')
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
