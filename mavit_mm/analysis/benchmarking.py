"""Timing helpers shared by the benchmark tools: medians after warm-up, peak memory, the environment."""
import contextlib
import functools
import platform
import statistics
import time
from typing import Callable, Dict, Iterator, List, Sequence

import torch
from torch import nn


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
# a copy from pageable host memory first waits for the stream: the host blocks inside these too
COPY_EVENTS = ('cudaMemcpyAsync', 'cudaMemcpy')
PHASE_PREFIX = 'phase: '


@contextlib.contextmanager
def phases(model: nn.Module, optim_wrapper: object = None) -> Iterator[List[str]]:
    """Label the parts of an mmdet / mmseg model's training step for :func:`profile_steps`: the forwards of
    its top-level submodules (data preprocessor, backbone, neck, heads), the heads' ``loss`` /
    ``loss_and_predict``, and the optimizer wrapper's ``backward`` and ``step``. Yields the labels;
    the instances' methods are restored on exit."""
    from torch.profiler import record_function
    patched, labels = [], []

    def wrap(obj: object, method: str, label: str) -> None:
        fn = getattr(obj, method, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def labelled(*args, **kwargs):
            with record_function(PHASE_PREFIX + label):
                return fn(*args, **kwargs)

        patched.append((obj, method, vars(obj).get(method)))  # an instance's own (e.g. CUDA-graphed) forward
        setattr(obj, method, labelled)
        labels.append(label)

    for name, child in model.named_children():
        if name.endswith('head'):
            for method in ('loss_and_predict', 'loss'):
                if hasattr(child, method):
                    wrap(child, method, f'{name}.{method}')
                    break
        else:
            wrap(child, 'forward', name)
    if optim_wrapper is not None:
        wrap(optim_wrapper, 'backward', 'backward')
        wrap(optim_wrapper, 'step', 'optimizer step')
    try:
        yield labels
    finally:
        for obj, method, own in reversed(patched):
            if own is None:
                delattr(obj, method)
            else:
                setattr(obj, method, own)


def profile_steps(fn: Callable[[], object],
                  device: torch.device,
                  steps: int = 3,
                  top: int = 8,
                  labels: Sequence[str] = ()) -> Dict[str, object]:
    """Where ``steps`` calls of ``fn`` spend their time, per call, from ``torch.profiler``.

    Returns:
        ``wall_ms``; on CUDA ``gpu_busy_ms`` (sum of kernel time), ``gpu_busy_frac``, ``kernel_launches``,
        ``syncs`` (stream / device / event synchronisations), ``wait_ms`` (host time inside those and inside
        host-to-device copy calls, which wait for the stream when the source is pageable), ``h2d_copies``
        and ``h2d_ms`` (host-to-device memcpy count and device time), ``top_kernels``: the ``top`` most launched
        kernels as ``(name, launches per call, device ms per call)``; always ``top_host_ops``: the ``top``
        operators by self CPU time, as ``(name, ms per call, calls per call)``; with ``labels`` (from
        :func:`phases`) ``phases``: per label, host ms, launches, syncs and wait ms per call.
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
    events = prof.events()
    cpu = torch.autograd.DeviceType.CPU
    out: Dict[str, object] = {'wall_ms': 1e3 * wall, 'steps': steps}
    launches = [e for e in events if e.name in LAUNCH_EVENTS]
    waits = [e for e in events if e.name in SYNC_EVENTS + COPY_EVENTS]
    if device.type == 'cuda':
        kernels = [
            e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith(PHASE_PREFIX)
        ]
        busy = sum(e.device_time for e in kernels if not e.name.startswith('Memcpy')) / 1e3 / steps
        h2d = [e for e in kernels if e.name.startswith('Memcpy HtoD')]
        out.update(
            gpu_busy_ms=busy,
            gpu_busy_frac=busy / out['wall_ms'],
            kernel_launches=len(launches) / steps,
            syncs=sum(1 for e in events if e.name in SYNC_EVENTS) / steps,
            wait_ms=sum(_duration_us(e) for e in waits) / 1e3 / steps,
            h2d_copies=len(h2d) / steps,
            h2d_ms=sum(e.device_time for e in h2d) / 1e3 / steps)
        counts: Dict[str, List[float]] = {}
        for e in kernels:
            c = counts.setdefault(e.name, [0, 0.0])
            c[0] += 1
            c[1] += e.device_time
        most = sorted(counts.items(), key=lambda kv: -kv[1][0])[:top]
        out['top_kernels'] = [(name, n / steps, us / 1e3 / steps) for name, (n, us) in most]
    host = sorted((e for e in averages if e.key.startswith('aten::')), key=lambda e: -e.self_cpu_time_total)
    out['top_host_ops'] = [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in host[:top]]
    if labels:
        ranges = [e for e in events if e.device_type == cpu and e.name.startswith(PHASE_PREFIX)]
        table = {}
        for label in labels:
            mine = [e for e in ranges if e.name == PHASE_PREFIX + label]
            spans = [(e.time_range.start, e.time_range.end) for e in mine]

            def inside(e, spans=spans) -> bool:
                return any(a <= e.time_range.start <= b for a, b in spans)

            table[label] = dict(
                host_ms=sum(b - a for a, b in spans) / 1e3 / steps,
                launches=sum(map(inside, launches)) / steps,
                syncs=sum(1 for e in waits if e.name in SYNC_EVENTS and inside(e)) / steps,
                wait_ms=sum(_duration_us(e) for e in waits if inside(e)) / 1e3 / steps)
        out['phases'] = table
    return out


def _duration_us(event) -> float:
    return event.time_range.end - event.time_range.start
