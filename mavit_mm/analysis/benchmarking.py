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


# profiler event names of the host-side costs of an iteration
LAUNCH_EVENTS = ('cudaLaunchKernel', 'cudaLaunchKernelExC', 'cuLaunchKernel', 'cuLaunchKernelEx')
SYNC_EVENTS = ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize')


def profile_steps(fn: Callable[[], object], device: torch.device, steps: int = 3, top: int = 8) -> Dict[str, object]:
    """Where ``steps`` calls of ``fn`` spend their time, per call, from ``torch.profiler``.

    Returns:
        ``wall_ms``; on CUDA ``gpu_busy_ms`` (sum of kernel time), ``gpu_busy_frac``, ``kernel_launches``,
        ``syncs`` (stream / device / event synchronisations), ``h2d_copies`` and ``h2d_ms`` (host-to-device
        memcpy count and device time); always ``top_host_ops``: the ``top`` operators by self CPU time,
        as ``(name, ms per call, calls per call)``.
    """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    fn()  # allocator / autotuning warm-up outside the profile
    _sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        wall = (time.perf_counter() - start) / steps
    averages = prof.key_averages()
    out: Dict[str, object] = {'wall_ms': 1e3 * wall, 'steps': steps}
    if device.type == 'cuda':
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels if not e.name.startswith('Memcpy')) / 1e3 / steps
        h2d = [e for e in kernels if e.name.startswith('Memcpy HtoD')]
        out.update(
            gpu_busy_ms=busy,
            gpu_busy_frac=busy / out['wall_ms'],
            kernel_launches=sum(e.count for e in averages if e.key in LAUNCH_EVENTS) / steps,
            syncs=sum(e.count for e in averages if e.key in SYNC_EVENTS) / steps,
            h2d_copies=len(h2d) / steps,
            h2d_ms=sum(e.device_time for e in h2d) / 1e3 / steps)
    host = sorted((e for e in averages if e.key.startswith('aten::')), key=lambda e: -e.self_cpu_time_total)
    out['top_host_ops'] = [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in host[:top]]
    return out
