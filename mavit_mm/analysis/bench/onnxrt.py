"""``benchmark.py onnx``: a MAViT backbone in onnxruntime beside PyTorch eager and the fast path.

Exports MAViT-<arch> (random weights; MALA's plain PyTorch form, fp32, static shape; as
``tools/deployment/pytorch2onnx.py --backbone-only``) and times, in one run, batch ``--batch-size`` at
``--shape`` (default 1 x 512x2048, the segmentation test size):

  onnxruntime, one row per provider of ``--providers`` (default: every installed one; fp32 graph)
  PyTorch, ``fast_path='off'``, fp32 and under ``--precision`` autocast
  PyTorch, ``fast_path='auto'`` (Triton MALA on CUDA), the same two
  PyTorch, ``'auto'`` replayed from CUDA graphs (``--precision``; CUDA only)

Each row: median ms, img/s, and the largest difference of its outputs from PyTorch fp32 relative to the
largest output magnitude. onnxruntime rows: ``--ort-repeats`` timed runs after one untimed run (a CPU
provider at 512x2048 takes seconds per image).
"""
import argparse
import contextlib
import os
import tempfile
import time
from typing import Callable, List, Sequence

import numpy as np
import torch

from ..benchmarking import environment, measure
from . import UsageError, autocast, check_device, no_tf32, print_env


def _rel_diff(outs: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(o.astype(np.float32) - r).max() / (np.abs(r).max() + 1e-12)) for o, r in zip(outs, ref))


def _ort_rows(path: str, x: np.ndarray, ref: List[np.ndarray], providers: Sequence[str], repeats: int) -> List[dict]:
    import onnxruntime as ort
    rows = []
    for provider in providers:
        session = ort.InferenceSession(path, providers=[provider])
        run = lambda: session.run(None, {'input': x})  # noqa: E731
        outs = run()  # the untimed first run: onnxruntime allocates and plans here
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        median = 1e3 * float(np.median(times))
        rows.append(
            dict(
                runtime=f'onnxruntime {ort.__version__}, {provider}',
                precision='fp32',
                median_ms=median,
                rel_diff=_rel_diff(outs, ref),
                repeats=repeats))
    return rows


def _torch_row(label: str, precision: str, fn: Callable[[], Sequence[torch.Tensor]], ref: List[np.ndarray],
               device: torch.device, args) -> dict:
    outs = [o.float().cpu().numpy() for o in fn()]
    r = measure(fn, device, args.warmup, args.repeats, settle=3)
    r.update(runtime=label, precision=precision, rel_diff=_rel_diff(outs, ref))
    return r


def run(args: argparse.Namespace) -> dict:
    from mavit_mm.deployment import export_onnx
    from mavit_mm.engine import enable_cuda_graphs
    from mavit_mm.models import MAViT
    device = check_device(args.device)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError('onnxruntime is not installed: pip install -r requirements/deploy.txt') from None
    # the Azure provider runs models remotely (a CPU fallback here): not a local runtime to time
    providers = args.providers or [p for p in ort.get_available_providers() if p != 'AzureExecutionProvider']
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise UsageError(f'--providers {missing}: not in this onnxruntime; installed: {ort.get_available_providers()}')
    env = environment()
    env['onnxruntime'] = f'{ort.__version__} ({", ".join(ort.get_available_providers())})'
    print_env(env)
    h, w = args.shape
    x = torch.randn(args.batch_size, 3, h, w, generator=torch.Generator().manual_seed(0))
    model = MAViT(arch=args.arch, fast_path='off').eval()
    with torch.no_grad(), no_tf32():
        ref = [o.numpy() for o in model(x)]
    rows: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f'mavit-{args.arch}.onnx')
        export_onnx(model, path, (h, w), batch_size=args.batch_size)
        rows += _ort_rows(path, x.numpy(), ref, providers, args.ort_repeats)
        for r in rows:
            print(f'  {r["runtime"]:55s} {r["median_ms"]:9.2f} ms', flush=True)
    xd = x.to(device)
    precisions = ['fp32'] + ([args.precision] if args.precision != 'fp32' else [])
    for mode in ('off', 'auto', 'graphs'):
        if mode == 'graphs' and device.type != 'cuda':
            continue
        net = MAViT(arch=args.arch, fast_path='off' if mode == 'off' else 'auto').eval()
        net.load_state_dict(model.state_dict())
        net = net.to(device)
        if mode == 'graphs':
            net = enable_cuda_graphs(net, 'eval')
        for precision in ([args.precision] if mode == 'graphs' else precisions):

            def fn(net=net, precision=precision) -> Sequence[torch.Tensor]:
                with torch.no_grad(), autocast(device, precision):
                    return net(xd)

            label = {
                'off': "PyTorch, fast_path='off'",
                'auto': "PyTorch, fast_path='auto'",
                'graphs': "PyTorch, 'auto' + CUDA graphs"
            }[mode]
            with no_tf32() if precision == 'fp32' else contextlib.nullcontext():
                r = _torch_row(label, precision, fn, ref, device, args)
            rows.append(r)
            print(f'  {label + ", " + precision:55s} {r["median_ms"]:9.2f} ms', flush=True)
        del net
    base = next(r for r in rows if r['runtime'].startswith("PyTorch, fast_path='off'"))
    print(f'\nMAViT-{args.arch.upper()}, {args.batch_size} x 3 x {h} x {w}, {device}\n')
    print('| runtime | precision | median ms | img/s | vs PyTorch eager fp32 | max rel. diff to PyTorch fp32 |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        r['images_per_s'] = args.batch_size / (r['median_ms'] / 1e3)
        r['speedup_vs_eager_fp32'] = base['median_ms'] / r['median_ms']
        print(f'| {r["runtime"]} | {r["precision"]} | {r["median_ms"]:.2f} | {r["images_per_s"]:.1f} | '
              f'{r["speedup_vs_eager_fp32"]:.2f} | {r["rel_diff"]:.1e} |')
    return dict(env=env, arch=args.arch, shape=[args.batch_size, 3, h, w], rows=rows)
