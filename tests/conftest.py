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
        help='swap MAViT into every config mmdet and mmseg ship (over an hour on 2 cores); by default one '
        'config per model family')


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
