"""The subcommands of ``tools/analysis_tools/benchmark.py``: ``model``, ``backbone``, ``train-iter``, ``memory``,
``onnx``, ``runner``, ``real-run``, ``shapes``, ``cold-start``, ``launches``.

Each module has ``run(args) -> dict``, ``args`` being the options ``benchmark.py`` parsed (its parser defines
them); a wrong combination of options raises :class:`UsageError`, which the tool reports as a usage error.
"""
import contextlib
from typing import Dict, Iterator, List, Optional

import torch

PRECISIONS = ('fp32', 'bf16', 'fp16')


class UsageError(ValueError):
    """Options that cannot run as given (the message says what to pass instead)."""


#: tools/train.py's switches a ``--switches`` entry may name, with the values each takes (None: a flag).
TRAIN_SWITCHES = {'fast-train': None, 'cuda-graphs': ('eval', 'train', 'all')}


def parse_switch(entry: str) -> Dict[str, Optional[str]]:
    """One ``--switches`` entry as ``{switch: value}``: ``'none'`` -> ``{}``, ``'fast-train,cuda-graphs=train'``
    -> ``{'fast-train': None, 'cuda-graphs': 'train'}``; an unknown switch or value raises
    :class:`UsageError` naming the valid ones."""
    if entry in ('none', ''):
        return {}
    out: Dict[str, Optional[str]] = {}
    for item in entry.split(','):
        name, _, value = item.partition('=')
        if name not in TRAIN_SWITCHES:
            raise UsageError(f'{entry!r}: unknown switch {name!r}; one of {sorted(TRAIN_SWITCHES)}')
        values = TRAIN_SWITCHES[name]
        if (values is None) != (not value) or (values is not None and value not in values):
            want = 'takes no value' if values is None else f'takes ={"|".join(values)}'
            raise UsageError(f'{entry!r}: {name} {want}')
        out[name] = value or None
    return out


def switch_args(entry: str) -> List[str]:
    """``'fast-train,cuda-graphs=train'`` -> ``['--fast-train', '--cuda-graphs', 'train']``; ``'none'`` -> []."""
    out: List[str] = []
    for name, value in parse_switch(entry).items():
        out += [f'--{name}'] + ([value] if value else [])
    return out


def check_device(device: str) -> torch.device:
    """The ``--device`` as a torch device; :class:`UsageError` saying what to pass where it cannot run."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f'--device {device!r} is not a device: use cuda, cuda:N or cpu') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device here; pass --device cpu')
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 / fp16, or nothing for fp32."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == 'bf16' else torch.float16)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Exact fp32 matmuls and convolutions (what ``--precision fp32`` means)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def print_env(env: dict) -> None:
    print('\n'.join(f'# {k}: {v}' for k, v in env.items()), flush=True)


def print_profile(p: dict, indent: str = '    ') -> None:
    """A :func:`~mavit_mm.analysis.benchmarking.profile_steps` summary under a row: totals, the most launched
    kernels, the top host operators and, where the step was labelled, the same per phase."""
    if 'gpu_busy_ms' in p:
        print(f'{indent}GPU busy {p["gpu_busy_ms"]:.1f} of {p["wall_ms"]:.1f} ms ({100 * p["gpu_busy_frac"]:.0f} %), '
              f'{p["kernel_launches"]:.0f} launches, {p["syncs"]:.0f} syncs, host waiting on the GPU '
              f'{p["wait_ms"]:.1f} ms, {p["h2d_copies"]:.0f} H2D copies ({p["h2d_ms"]:.1f} ms)')
        print(f'{indent}most launched kernels (launches, device ms per step):')
        for name, n, ms in p['top_kernels']:
            print(f'{indent}  {n:6.0f} x {ms:7.2f} ms  {name[:110]}')
    print(f'{indent}top host ops: ' + ', '.join(f'{name} {ms:.1f} ms' for name, ms, _ in p['top_host_ops'][:5]))
    if p.get('phases'):
        print(f'{indent}{"phase":34s} {"host ms":>8s} {"launches":>9s} {"syncs":>6s} {"wait ms":>8s}')
        for label, ph in p['phases'].items():
            print(f'{indent}{label:34s} {ph["host_ms"]:8.1f} {ph["launches"]:9.0f} {ph["syncs"]:6.0f} '
                  f'{ph["wait_ms"]:8.1f}')
