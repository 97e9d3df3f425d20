"""Timing helpers shared by the benchmark tools: medians after warm-up, peak memory, the environment."""
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch


def environment() -> Dict[str, str]:
    """Device and versions, printed in the header of every benchmark."""
    info = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cpu': platform.processor() or platform.machine(),
        'threads': str(torch.get_num_threads())
    }
    if torch.cuda.is_available():
        info['device'] = torch.cuda.get_device_name()
        info['cuda'] = str(torch.version.cuda)
    else:
        info['device'] = 'cpu'
    for mod in ('mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain', 'triton'):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001  (absent or broken: just not reported)
            pass
    return info


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int = 5, repeats: int = 20) -> List[float]:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure(fn: Callable[[], object],
            device: torch.device,
            warmup: int = 5,
            repeats: int = 20,
            settle: int = 1) -> Dict[str, float]:
    """Median and spread of ``fn``'s time (ms) and, on CUDA, its peak memory (MiB) after warm-up:
    after ``settle`` calls (one; more where the first calls capture CUDA graphs). Two peaks: of the
    tensors allocated (``peak_mem_mib``, what mmengine logs) and of the memory reserved from the GPU
    with unused cache released first (``peak_reserved_mib``: with the caching allocator's slack, and
    the only one that sees all of a CUDA-graph memory pool)."""
    if device.type == 'cuda':
        for _ in range(settle):
            fn()
        _sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = time_it(fn, device, warmup, repeats)
    out = {
        'median_ms': 1e3 * statistics.median(times),
        'min_ms': 1e3 * min(times),
        'max_ms': 1e3 * max(times),
        'repeats': repeats
    }
    if device.type == 'cuda':
        out['peak_mem_mib'] = torch.cuda.max_memory_allocated(device) / 2**20
        out['peak_reserved_mib'] = torch.cuda.max_memory_reserved(device) / 2**20
    return out
