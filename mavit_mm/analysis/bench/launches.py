"""``benchmark.py launches``: what one MAViT training step asks of the host, counted.

An eager training step at a new input size cannot be replayed from a graph, so its host time grows with the
work it dispatches: every operator that computes (through the dispatcher, autograd and a kernel launch) and
every Triton kernel launch. This counts both for one forward and its backward (fp16 autocast, 2 images,
the backbone's default fast path), with a ``TorchDispatchMode`` for the operators (views and allocations
excluded: they launch nothing) and a wrapper around Triton's launcher. On a CPU the fast path's kernels run
only under Triton's interpreter (``TRITON_INTERPRET=1``), whose own tensor copies are not counted; there the
blocks' 1x1 convolutions stay convolutions, where on CUDA they are GEMMs.
"""
import argparse
import contextlib
from typing import Callable, Dict, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..benchmarking import environment
from . import check_device, print_env

# operators that launch no kernel besides the views
_NO_KERNEL = {
    'empty', 'empty_like', 'empty_strided', 'new_empty', 'new_empty_strided', 'lift_fresh', 'sym_size', 'sym_stride',
    'sym_numel', 'is_same_size', 'set_'
}


class _Counter(TorchDispatchMode):
    """Counts the operators dispatched while active, outside Triton launches."""

    def __init__(self, counts: Dict[str, int]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.counts['_inside'] and not func.is_view and func.__name__.split('.')[0] not in _NO_KERNEL:
            self.counts['operators'] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting() -> Iterator[Dict[str, int]]:
    """Within the block, ``counts['operators']`` and ``counts['triton']`` grow with each operator dispatched
    (a view or an allocation aside) and each Triton kernel launched."""
    import triton
    counts = {'operators': 0, 'triton': 0, '_inside': 0}
    launchers = [triton.runtime.jit.JITFunction]
    interpreter = getattr(triton.runtime, 'interpreter', None)
    if interpreter is not None:
        launchers.append(interpreter.InterpretedFunction)
    saved = [(cls, cls.run) for cls in launchers]

    def wrap(run: Callable) -> Callable:

        def counted(self, *args, **kwargs):
            counts['triton'] += 1
            counts['_inside'] += 1
            try:
                return run(self, *args, **kwargs)
            finally:
                counts['_inside'] -= 1

        return counted

    for cls, run in saved:
        cls.run = wrap(run)
    try:
        with _Counter(counts):
            yield counts
    finally:
        for cls, run in saved:
            cls.run = run


def count_step(arch: str, device: torch.device, shape=(224, 320)) -> Dict[str, int]:
    """Operators and Triton launches of one MAViT training step (forward, then backward) on ``device``."""
    from mavit_mm.models.backbones.mavit import MAViT
    torch.manual_seed(0)
    model = MAViT(arch, drop_path_rate=0.2).to(device).train()
    x = torch.randn(2, 3, *shape, device=device)
    dtype = torch.float16

    def forward():
        with torch.autocast(device.type, dtype=dtype):
            return model(x)

    sum(o.float().mean() for o in forward()).backward()  # self-checks, compilation, lazy inits: not counted
    model.zero_grad(set_to_none=True)
    with counting() as counts:
        out = forward()
        fwd = dict(counts)
        sum(o.float().mean() for o in out).backward()
    return dict(
        forward_operators=fwd['operators'],
        forward_triton=fwd['triton'],
        backward_operators=counts['operators'] - fwd['operators'],
        backward_triton=counts['triton'] - fwd['triton'])


def run(args: argparse.Namespace) -> dict:
    device = check_device(args.device)
    env = environment()
    print_env(env)
    rows = []
    for arch in args.arch:
        r = dict(arch=arch, **count_step(arch, device, tuple(args.shape)))
        rows.append(r)
        print(
            f'  MAViT-{arch.upper()}: forward {r["forward_operators"]} operators + {r["forward_triton"]} Triton '
            f'launches, backward {r["backward_operators"]} + {r["backward_triton"]}',
            flush=True)
    return dict(env=env, rows=rows)
