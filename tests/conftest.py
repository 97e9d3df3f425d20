import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        '--gpu-full',
        action='store_true',
        help='run the full GPU sweep (every arch, every kernel layout, torch.compile for all '
        'archs); by default a GPU run takes a representative subset, in minutes')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--gpu-full'):
        return
    skip = pytest.mark.skip(reason='part of the full GPU sweep: pass --gpu-full')
    for item in items:
        if 'gpu_full' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
