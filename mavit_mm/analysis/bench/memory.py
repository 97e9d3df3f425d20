"""``benchmark.py memory``: where a MAViT training step's activation memory goes, bytes saved for backward per layer.

One forward in train mode per ``--fast-path`` and ``--with-cp`` setting (stochastic depth off); every
tensor autograd keeps for the backward is charged once to the layer that saved it first
(:mod:`mavit_mm.analysis.activation_memory`). The figures are exact and device independent for the
same dtypes; which ops autocast runs in half precision differs between CPU and CUDA, so compare
half-precision figures within one device type. ``auto`` on a CPU needs ``TRITON_INTERPRET=1`` (the
Triton kernels' bookkeeping through Triton's interpreter; keep ``--shape`` small).
"""
import argparse
from typing import Dict

import torch

from ..benchmarking import environment
from . import UsageError, autocast, check_device, print_env

MIB = 2**20
WITH_CP = ('none', 'ffn', 'stem', 'ffn,stem', 'block')


def run(args: argparse.Namespace) -> dict:
    from mavit_mm.models import MAViT
    from mavit_mm.ops.mala import kernels_can_run
    from ..activation_memory import PARAMETERS, saved_activations
    device = check_device(args.device)
    x = torch.randn(args.batch_size, 3, *args.shape, device=device)
    if 'auto' in args.fast_path and not kernels_can_run(x):
        raise UsageError("--fast-path auto needs a CUDA GPU here (or TRITON_INTERPRET=1 to run the Triton kernels on "
                         'the CPU: slow, keep --shape small); else pass --fast-path off')
    env = environment()
    print_env(env)
    print(f'# MAViT-{args.arch.upper()}, train mode, {args.batch_size} x 3 x {args.shape[0]} x {args.shape[1]}, '
          f'{args.precision}')
    totals: Dict[str, float] = {}
    rows: Dict[str, Dict[str, float]] = {}
    params = 0.0
    columns = {
        (f'{mode}, with_cp={cp}' if cp != 'none' else mode): (mode, cp)
        for mode in args.fast_path
        for cp in args.with_cp
    }
    for label, (mode, cp) in columns.items():
        torch.manual_seed(0)
        model = MAViT(
            arch=args.arch, fast_path=mode, drop_path_rate=0.0,
            with_cp=False if cp == 'none' else cp.split(',')).to(device).train()

        def forward(model=model):
            with autocast(device, args.precision):
                return model(x)

        total, by_layer = saved_activations(model, forward)
        totals[label] = total / MIB
        params = by_layer.pop(PARAMETERS, 0) / MIB
        for name, nbytes in by_layer.items():
            rows.setdefault(name, {})[label] = nbytes / MIB
    labels = list(columns)
    first = labels[0]
    print(f'\nsaved for backward, MiB ({PARAMETERS} alive anyway: {params:.1f} MiB, not counted)\n')
    print('| layer | ' + ' | '.join(labels) + f' | share of {first} |')
    print('|---|' + '---|' * (len(labels) + 1))
    for name in sorted(rows, key=lambda k: -max(rows[k].values()))[:args.top]:
        cells = ' | '.join(f'{rows[name].get(m, 0.0):.1f}' for m in labels)
        print(f'| {name} | {cells} | {rows[name].get(first, 0.0) / max(totals[first], 1e-9):.1%} |')
    print('| total | ' + ' | '.join(f'**{totals[m]:.1f}**' for m in labels) + ' | 100% |')
    for m in labels[1:]:
        print(f'# {m} / {first}: {totals[m] / max(totals[first], 1e-9):.2f}')
    return dict(
        env=env,
        arch=args.arch,
        shape=list(args.shape),
        batch_size=args.batch_size,
        precision=args.precision,
        totals_mib=totals,
        rows_mib=rows)
