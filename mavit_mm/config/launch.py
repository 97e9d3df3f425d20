"""Distributed launches where mmengine's one-GPU-per-process assumption does not hold.

mmengine 0.10.7 assumes a GPU per process in three places: its ``init_dist`` calls
``torch.cuda.set_device(LOCAL_RANK)``, the Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``,
and SyncBN layers run only on GPUs. :func:`prepare_distributed` handles the two launches that break it:

- no CUDA device (torchrun on CPUs, e.g. to check a launch before a GPU job): a gloo process group, DDP
  without device ids, BN where the config asks for SyncBN, as described in docs/multi_gpu.md;
- more processes on a machine than GPUs (``tools/dist_train.sh CONFIG 2`` on one GPU): process ``r`` uses
  GPU ``r % count`` (and ``LOCAL_RANK`` becomes that index, which is what mmengine takes it for), and the
  process group is gloo over CUDA tensors, because NCCL refuses two ranks on one device. SyncBN stays SyncBN
  (torch's SyncBatchNorm gathers through gloo too).

In both cases the process group is initialised here, before the Runner, so the Runner's ``init_dist`` is
skipped. With a GPU per process nothing changes: mmengine's own NCCL set-up runs.
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

from ..utils.config_walk import replace_types

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'TorchSyncBN')


def shared_gpu(local_rank: int, local_world_size: int, gpus: int) -> Optional[int]:
    """The GPU of process ``local_rank`` when ``local_world_size`` processes share ``gpus`` GPUs, or None
    when each process has a GPU of its own (or there is no GPU)."""
    if gpus <= 0 or local_world_size <= gpus:
        return None
    return local_rank % gpus


def _cpu_ddp_wrapper(cfg: Config) -> None:
    """mmengine's default DDP wrapper without device ids (the Runner's default is ``[LOCAL_RANK]``, a GPU);
    a wrapper the config sets itself is left as it is."""
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def _init_gloo(cfg: Config) -> None:
    env_cfg = cfg.get('env_cfg') or {}
    env_cfg['dist_cfg'] = {**(env_cfg.get('dist_cfg') or {}), 'backend': 'gloo'}
    cfg.env_cfg = env_cfg  # (Config.setdefault returns its argument, not the stored copy)
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))


def prepare_distributed(cfg: Config, launcher: str) -> None:
    """Make a distributed run of ``cfg`` work without a GPU per process (no-op otherwise).

    Args:
        cfg: the loaded config, edited in place before the Runner is built.
        launcher: the tools' ``--launcher`` value.
    """
    if launcher == 'none':
        return
    if torch.cuda.is_available():
        if launcher != 'pytorch':
            return  # Slurm / MPI jobs request a GPU per task
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        gpus = torch.cuda.device_count()
        device = shared_gpu(local_rank, int(os.environ.get('LOCAL_WORLD_SIZE', 1)), gpus)
        if device is None:
            return
        torch.cuda.set_device(device)
        # mmengine reads LOCAL_RANK as this process's CUDA device (DDP's default device_ids, the logger's
        # device id, which indexes CUDA_VISIBLE_DEVICES): make it the shared device, before anything logs
        os.environ['LOCAL_RANK'] = str(device)
        _init_gloo(cfg)
        print_log(
            f'{os.environ.get("LOCAL_WORLD_SIZE")} processes share {gpus} GPU(s): process group gloo (NCCL needs '
            f'a GPU per process), local rank {local_rank} on cuda:{device}',
            logger='current')
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA devices; on CPUs launch with torchrun '
                         '(tools/dist_train.sh / tools/dist_test.sh, --launcher pytorch)')
    _init_gloo(cfg)
    _cpu_ddp_wrapper(cfg)
    if cfg.get('sync_bn'):
        cfg.sync_bn = None  # the Runner's BN -> SyncBN conversion
    replaced = replace_types(cfg._cfg_dict, {t: 'BN' for t in SYNC_BN_TYPES})
    if replaced:
        print_log(
            f'no CUDA device: {replaced} SyncBN norm config(s) trained as BN (SyncBN runs on GPUs only)',
            logger='current')
