"""Distributed launches on machines without CUDA (torchrun on CPUs, e.g. to check a launch before a GPU job).

mmengine 0.10.7 assumes a GPU per process in three places: its ``init_dist`` calls
``torch.cuda.set_device``, the Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, and SyncBN
layers run only on GPUs. :func:`prepare_cpu_distributed` sets up the same run on CPUs instead: a gloo
process group (initialised here, so the Runner's ``init_dist`` is skipped), DDP without device ids, and
BN where the config asks for SyncBN. On a machine with CUDA it changes nothing.
"""
import os
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'TorchSyncBN')


def _sync_bn_to_bn(node: Any) -> int:
    """Replace SyncBN norm types by BN in a config tree, in place; returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def prepare_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make a distributed run of ``cfg`` work where no CUDA device is visible (no-op otherwise).

    Args:
        cfg: the loaded config, edited in place before the Runner is built.
        launcher: the tools' ``--launcher`` value; only ``'pytorch'`` (torchrun) is supported on CPUs.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA devices; on CPUs launch with torchrun '
                         '(tools/dist_train.sh / tools/dist_test.sh, --launcher pytorch)')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if cfg.get('sync_bn'):
        cfg.sync_bn = None  # the Runner's BN -> SyncBN conversion
    replaced = _sync_bn_to_bn(cfg._cfg_dict)
    if replaced:
        print_log(
            f'no CUDA device: {replaced} SyncBN norm config(s) trained as BN (SyncBN runs on GPUs only)',
            logger='current')
