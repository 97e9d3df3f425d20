"""Where a MAViT training step's activation memory goes: bytes saved for backward, per layer.

    python tools/analysis/activation_memory.py --arch t --shape 800 1344 --batch 2 --amp   # on a GPU
    python tools/analysis/activation_memory.py --arch t --shape 256 384 --device cpu --with-cp none ffn
    TRITON_INTERPRET=1 python tools/analysis/activation_memory.py --device cpu --shape 128 192 \
        --modes off kernels     # the Triton kernels' bookkeeping on a CPU, through Triton's interpreter

One forward in train mode per fast-path mode and --with-cp setting (stochastic depth off); every
tensor autograd keeps for the backward is charged once to the layer that saved it first
(``mavit_mm.analysis.activation_memory``).
The figures are exact and device independent for the same dtypes; which ops autocast runs in bf16
differs between CPU and CUDA, so compare half-precision figures within one device type.
"""
import argparse
import json
import os
import sys
from typing import Dict

import torch

from mavit_mm import MAViT
from mavit_mm.analysis.activation_memory import PARAMETERS, saved_activations
from mavit_mm.analysis.benchmarking import environment
from mavit_mm.models.layers import fast_path
from mavit_mm.utils.fileio import write_text_atomic

MIB = 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='t', help='t, s, b or l')
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1344), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--modes', nargs='+', default=['off', 'kernels'], choices=['off', 'kernels', 'compile'],
                        help="fast_path modes to account ('off' is the reference; 'compile' on CPU compiles it)")
    parser.add_argument('--with-cp', nargs='+', default=['none'], choices=['none', 'ffn', 'block'],
                        help='MAViT with_cp settings to account for each mode (none: keep everything)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast (else fp32)')
    parser.add_argument('--top', type=int, default=25, help='rows to print (all go to --out)')
    parser.add_argument('--out', help='write the figures as json')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('activation_memory: no CUDA device; pass --device cpu')
    if 'kernels' in args.modes and device.type == 'cpu':
        if os.environ.get('TRITON_INTERPRET') != '1':
            sys.exit("activation_memory: 'kernels' mode needs a CUDA GPU, or TRITON_INTERPRET=1 to run "
                     'the Triton kernels on the CPU (slow: keep --shape small)')
        fast_path.kernels_can_run = lambda x: True

    env = environment()
    print('\n'.join(f'# {k}: {v}' for k, v in env.items()))
    print(f'# MAViT-{args.arch.upper()}, train mode, {args.batch} x 3 x {args.shape[0]} x {args.shape[1]}, '
          f'{"bf16 autocast" if args.amp else "fp32"}')
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, *args.shape, device=device)
    totals: Dict[str, float] = {}
    rows: Dict[str, Dict[str, float]] = {}
    params = 0.0
    columns = {(f'{mode}, with_cp={cp}' if cp != 'none' else mode): (mode, cp)
               for mode in args.modes for cp in args.with_cp}
    for label, (mode, cp) in columns.items():
        model = MAViT(arch=args.arch, fast_path=mode, drop_path_rate=0.0,
                      with_cp=False if cp == 'none' else cp).to(device).train()

        def forward(model=model):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
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
    order = sorted(rows, key=lambda k: -max(rows[k].values()))
    for name in order[:args.top]:
        cells = ' | '.join(f'{rows[name].get(m, 0.0):.1f}' for m in labels)
        print(f'| {name} | {cells} | {rows[name].get(first, 0.0) / max(totals[first], 1e-9):.1%} |')
    cells = ' | '.join(f'**{totals[m]:.1f}**' for m in labels)
    print(f'| total | {cells} | 100% |')
    for m in labels[1:]:
        print(f'# {m} / {first}: {totals[m] / max(totals[first], 1e-9):.2f}')
    if args.out:
        write_text_atomic(json.dumps(dict(env=env, arch=args.arch, shape=list(args.shape), batch=args.batch,
                                          amp=args.amp, totals_mib=totals, rows_mib=rows), indent=2) + '\n',
                          args.out)


if __name__ == '__main__':
    main()
