"""Where a training iteration's time goes: mmengine's ``ProfilerHook`` over a few iterations, with the
model's parts marked and the trace summarised per part.

:func:`add_profiling` (``tools/train.py --profile N``) adds two hooks to a config:

- mmengine's ``ProfilerHook``, recording CPU and CUDA activity over ``N`` iterations from ``start`` (a
  ``torch.profiler`` schedule: the iterations before it run unprofiled), printing torch's table of the ops
  with the most self CPU time and writing the Chrome trace ``profile_trace.json`` to the work dir;
- :class:`PhaseRangesHook`, which marks each direct child of the model (``data_preprocessor``,
  ``backbone``, ``neck``, the heads: their ``forward``, ``loss``, ``loss_and_predict`` and ``predict``) and
  the optimizer wrapper's ``backward`` and ``step`` as profiler ranges ``phase::NAME``, and once the trace is
  written logs :func:`summarise_trace`'s table and saves it as ``profile_phases.json`` (the other processes
of a launch: ``profile_trace_rank{r}.json`` and ``profile_phases_rank{r}.json``).

The summary per profiled iteration: wall time, the host time inside each part (the backward is the main
thread's wait for autograd, which runs the backward ops and launches their kernels), the kernel launches
issued while each part ran, and the time in which a kernel or copy ran on the GPU. ``other`` is the rest of
the iteration: fetching the next batch, the hooks, logging.
"""
import functools
import json
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.utils import mkdir_or_exist
from torch import nn

from ..utils.fileio import write_text_atomic

PHASE_PREFIX = 'phase::'
TRACE_NAME = 'profile_trace.json'
SUMMARY_NAME = 'profile_phases.json'
_METHODS = ('loss', 'loss_and_predict', 'predict')
_GPU_CATEGORIES = ('kernel', 'gpu_memcpy', 'gpu_memset')
Interval = Tuple[float, float]


def _rank_name(name: str, rank: int) -> str:
    """``name`` for process ``rank`` of a launch: rank 0 keeps it, rank r gets ``_rank{r}`` before the suffix."""
    return name if rank == 0 else name.replace('.json', f'_rank{rank}.json')


def add_profiling(cfg: Config, iters: int, start: int) -> None:
    """Profile training iterations ``[start, start + iters)`` of ``cfg`` (a prepared run config with its
    ``work_dir``): mmengine's ``ProfilerHook`` plus :class:`PhaseRangesHook` in ``cfg.custom_hooks``. Each
    process of a launch (``RANK``) writes its own trace and summary."""
    if iters < 1 or start < 1:
        raise ValueError(f'profiling needs at least one iteration after the first, got {iters} from {start}')
    rank = int(os.environ.get('RANK', 0))
    trace = osp.join(cfg.work_dir, _rank_name(TRACE_NAME, rank))
    profiler = dict(
        type='ProfilerHook',
        by_epoch=False,
        profile_times=start + iters,
        activity_with_cpu=True,
        activity_with_cuda=torch.cuda.is_available(),
        # iteration start - 1 warms the profiler up (its overhead, not recorded)
        schedule=dict(wait=start - 1, warmup=1, active=iters, repeat=1),
        on_trace_ready=dict(type='log_trace', sort_by='self_cpu_time_total', row_limit=25),
        json_trace_path=trace)
    ranges = dict(type='PhaseRangesHook', trace=trace, summary=osp.join(cfg.work_dir, _rank_name(SUMMARY_NAME, rank)))
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [profiler, ranges]


def _wrap(fn: Callable, name: str) -> Callable:

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(PHASE_PREFIX + name):
            return fn(*args, **kwargs)

    return wrapped


def mark_phases(model: nn.Module, optim_wrapper: Optional[object] = None) -> List[str]:
    """Mark ``model``'s direct children and ``optim_wrapper``'s ``backward`` / ``step`` as profiler ranges
    ``phase::NAME``; returns the names. A child's ``forward`` is marked by module hooks, its other entry
    points (:data:`_METHODS`) by wrapping them on the instance."""
    names = []
    for name, child in model.named_children():
        ranges: List[torch.profiler.record_function] = []

        def enter(module, args, name=name, ranges=ranges):
            ranges.append(torch.profiler.record_function(PHASE_PREFIX + name))
            ranges[-1].__enter__()

        def leave(module, args, output, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        child.register_forward_pre_hook(enter)
        child.register_forward_hook(leave, always_call=True)
        for method in _METHODS:
            if callable(getattr(child, method, None)):
                setattr(child, method, _wrap(getattr(child, method), name))
        names.append(name)
    for method, name in (('backward', 'backward'), ('step', 'optimizer')):
        if callable(getattr(optim_wrapper, method, None)):
            setattr(optim_wrapper, method, _wrap(getattr(optim_wrapper, method), name))
            names.append(name)
    return names


def _union(intervals: List[Interval]) -> float:
    """Total length covered by ``intervals``."""
    total, end = 0.0, float('-inf')
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _clip(intervals: List[Interval], lo: float, hi: float) -> List[Interval]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def summarise_trace(trace: dict) -> dict:
    """Per-iteration means over the ``ProfilerStep#k`` ranges of a Chrome trace (``torch.profiler``'s
    ``export_chrome_trace``; times in microseconds): ``iterations``, ``wall_ms``, ``gpu_busy_ms`` (the union
    of kernel, copy and memset intervals), ``launches`` (kernel launches issued), and per phase
    (``phase::NAME`` ranges) ``ms`` (the union of its ranges) and ``launches`` (issued while one of its
    ranges was open); ``other`` is the rest of the wall time."""
    events = [e for e in trace.get('traceEvents', []) if e.get('ph') == 'X' and 'dur' in e]

    def span(e: dict) -> Interval:
        return float(e['ts']), float(e['ts']) + float(e['dur'])

    # the host's ranges: Kineto repeats each one on the GPU's timeline as a 'gpu_user_annotation'
    ranges = [e for e in events if e.get('cat') == 'user_annotation']
    steps = sorted(span(e) for e in ranges if str(e.get('name', '')).startswith('ProfilerStep#'))
    if not steps:
        raise ValueError('the trace has no ProfilerStep ranges: was the profiler stepped once per iteration?')
    phases: Dict[str, List[Interval]] = {}
    for e in ranges:
        if str(e['name']).startswith(PHASE_PREFIX):
            phases.setdefault(e['name'][len(PHASE_PREFIX):], []).append(span(e))
    gpu = [span(e) for e in events if e.get('cat') in _GPU_CATEGORIES]
    launches = [
        float(e['ts']) for e in events if e.get('cat') in ('cuda_runtime', 'cuda_driver') and 'Launch' in e['name']
    ]
    n = len(steps)
    wall = sum(b - a for a, b in steps)
    result = dict(
        iterations=n,
        wall_ms=wall / n / 1e3,
        gpu_busy_ms=sum(_union(_clip(gpu, a, b)) for a, b in steps) / n / 1e3,
        launches=sum(a <= t < b for t in launches for a, b in steps) / n,
        phases={})
    covered = 0.0
    for name, spans in phases.items():
        inside = [iv for a, b in steps for iv in _clip(spans, a, b)]
        ms = _union(inside)
        covered += ms
        result['phases'][name] = dict(
            ms=ms / n / 1e3, launches=sum(any(a <= t < b for a, b in inside) for t in launches) / n)
    result['phases']['other'] = dict(ms=(wall - covered) / n / 1e3, launches=None)
    return result


def format_summary(summary: dict) -> str:
    """``summary`` (:func:`summarise_trace`) as a Markdown table."""
    lines = [
        f'{summary["iterations"]} profiled iterations: {summary["wall_ms"]:.1f} ms each, GPU busy '
        f'{summary["gpu_busy_ms"]:.1f} ms, {summary["launches"]:.0f} kernel launches', '',
        '| part | host ms / iter | share | kernel launches / iter |', '|---|---|---|---|'
    ]
    for name, p in summary['phases'].items():
        launches = '' if p['launches'] is None else f'{p["launches"]:.0f}'
        lines.append(f'| {name} | {p["ms"]:.1f} | {100 * p["ms"] / summary["wall_ms"]:.0f} % | {launches} |')
    return '\n'.join(lines)


@HOOKS.register_module()
class PhaseRangesHook(Hook):
    """Marks the model's parts and the optimizer's backward / step as profiler ranges (:func:`mark_phases`)
    and, once mmengine's ``ProfilerHook`` has written its trace, logs the per-part summary
    (:func:`summarise_trace`) and writes it as JSON.

    Added with ``ProfilerHook`` by :func:`add_profiling` (``tools/train.py --profile N``).

    Args:
        trace (str): The ``json_trace_path`` of the ``ProfilerHook``. Defaults to
            ``work_dir/profile_trace.json``.
        summary (str): Where the summary goes. Defaults to ``work_dir/profile_phases.json``.
    """
    priority = 'LOWEST'  # after ProfilerHook, which writes the trace in its after_train_iter

    def __init__(self, trace: Optional[str] = None, summary: Optional[str] = None) -> None:
        self.trace, self.summary = trace, summary
        self._done = False
        self._started = 0.0

    def before_run(self, runner) -> None:  # the model wrapped, the optimizer wrapper built
        self._started = time.time()  # a trace older than this run is not this run's
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = mark_phases(model, runner.optim_wrapper)
        runner.logger.info(f'profiler ranges: {", ".join(PHASE_PREFIX + n for n in names)}')

    def after_train_iter(self, runner, **kwargs) -> None:
        trace = self.trace or osp.join(runner.work_dir, TRACE_NAME)
        if self._done or not osp.isfile(trace) or osp.getmtime(trace) < self._started:
            return
        self._done = True
        with open(trace) as f:
            summary = summarise_trace(json.load(f))
        print_log('where the profiled iterations went:\n' + format_summary(summary), logger='current')
        path = self.summary or osp.join(runner.work_dir, SUMMARY_NAME)
        mkdir_or_exist(osp.dirname(osp.abspath(path)))
        write_text_atomic(json.dumps(summary, indent=2) + '\n', path)
