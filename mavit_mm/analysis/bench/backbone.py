"""``benchmark.py backbone``: MAViT backbones, plain PyTorch vs the fast path, beside peer backbones.

Settings (backbone only, as the paper's Figs. 5-6 and a detection training step; ``--shape`` and
``--batch-size`` override their sizes):

  cls    224x224, batch 64, eval forward
  seg    512x2048, batch 1, eval forward
  train  2 x 800x1344, forward + backward (loss = sum of the outputs' means), train mode

MAViT rows: each ``--fast-path`` value (``off``: plain PyTorch, the baseline of every ratio, always timed;
``auto``: Triton MALA, channels-last maps) and, with ``--cuda-graphs [eval|train|all]``, ``auto`` replayed
from CUDA graphs (``mavit_mm.engine.enable_cuda_graphs(model, MODE)``, the ``graphs`` rows; eval graphs
serve the inference settings, training graphs the ``train`` setting); ``--with-cp`` adds the training step
with those recomputed parts. Peers: any of :func:`.peers.available_peers`. Median of ``--repeats`` after
``--warmup``, images/s, peak memory after warm-up (with CUDA graphs: plus what the graphs' memory pool
holds beyond it). ``--profile N`` adds, per model, N profiled steps: GPU-busy time, kernel launches and
the most launched kernels (where a launch-bound step's host time goes). ``--sweep`` times one stage-1
attention layer (MALA vs softmax through SDPA) over image sizes and draws it.
"""
import argparse
import contextlib
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..benchmarking import environment, measure, profile_steps
from . import UsageError, autocast, check_device, no_tf32, print_env, print_profile
from .peers import available_peers

SETTINGS: Dict[str, Tuple[Tuple[int, int], int, bool]] = {  # (H, W), batch, train
    'cls': ((224, 224), 64, False),
    'seg': ((512, 2048), 1, False),
    'train': ((800, 1344), 2, True)
}
FAST_PATHS = ('off', 'auto')
DEFAULT_PEERS = ('Swin-T (torchvision)', 'ConvNeXt-T (torchvision)', 'ResNet-50 (torchvision)')


def _with_cp(text: str) -> List[str]:
    parts = text.split(',')
    bad = [p for p in parts if p not in ('block', 'ffn', 'stem')]
    if bad:
        raise ValueError(f'--with-cp {text}: unknown part(s) {bad}; use block, ffn, stem joined by commas')
    return parts


def mavit_models(archs: List[str],
                 fast_paths: List[str],
                 with_cp: List[str],
                 cuda_graphs: Optional[str] = None) -> Dict[str, Callable[[], nn.Module]]:
    """Row label -> builder of each MAViT row: ``'off'`` first, the other ``fast_paths``, then ``'graphs'``
    (``'auto'`` with CUDA graphs of mode ``cuda_graphs``) if given; with each ``with_cp`` setting too."""
    from mavit_mm.engine import enable_cuda_graphs
    from mavit_mm.models import MAViT

    def make(arch: str, mode: str, cp) -> Callable[[], nn.Module]:

        def build() -> nn.Module:
            model = MAViT(arch=arch, fast_path='off' if mode == 'off' else 'auto', with_cp=cp or False)
            return enable_cuda_graphs(model, cuda_graphs) if mode == 'graphs' else model

        return build

    modes = ('off', ) + tuple(m for m in fast_paths if m != 'off') + (('graphs', ) if cuda_graphs else ())
    models = {}
    for a in archs:
        for mode in modes:
            for cp in [None] + ([] if mode == 'off' else [_with_cp(c) for c in with_cp]):
                if mode == 'graphs' and cp and 'block' in cp:
                    continue  # the training graphs cannot capture whole-block recomputation
                label = f'MAViT-{a.upper()} ({mode}' + (f', with_cp={"+".join(cp)})' if cp else ')')
                models[label] = make(a, mode, cp)
    return models


def step_fn(model: nn.Module, x: torch.Tensor, train: bool, precision: str) -> Callable[[], object]:
    params = list(model.parameters())

    def forward():
        with autocast(x.device, precision):
            return model(x)

    if not train:

        def infer():
            with torch.no_grad():
                return forward()

        return infer

    def train_step():
        loss = sum(o.float().mean() for o in forward())
        loss.backward()
        for p in params:
            p.grad = None

    return train_step


def bench_setting(name: str, models: Dict[str, Callable[[], nn.Module]], args, device) -> List[dict]:
    from mavit_mm.engine.cuda_graphs import cuda_graphs_mode, graph_pool_bytes
    (h, w), batch, train = SETTINGS[name]
    h, w = args.shape or (h, w)
    batch = args.batch_size or batch
    x = torch.randn(batch, 3, h, w, device=device)
    rows = []
    for label, make in models.items():
        if not train and 'with_cp=' in label:
            continue  # checkpointing changes training only
        if '(graphs' in label and args.cuda_graphs != 'all' and (args.cuda_graphs == 'train') != train:
            continue  # eval graphs serve inference only, training graphs training steps
        model = make().to(device)
        model.train(train)  # some backbones' train() returns None
        graphed = cuda_graphs_mode(model) is not None and device.type == 'cuda'
        try:
            fn = step_fn(model, x, train, args.precision)
            # training graphs capture at the second call: settle after the capture, then reset the peak
            r = measure(fn, device, args.warmup, args.repeats, settle=3 if graphed else 1)
            if graphed:  # memory the graphs' pool holds beyond the live tensors counted in the peak
                reserved, allocated = graph_pool_bytes(model)
                r['graph_pool_idle_mib'] = (reserved - allocated) / 2**20
                r['peak_mem_mib'] += r['graph_pool_idle_mib']
            if args.profile:
                r['profile'] = profile_steps(fn, device, args.profile)
        except torch.OutOfMemoryError:
            r = {'median_ms': math.nan, 'error': 'out of memory'}
        r.update(setting=name, model=label, shape=[batch, 3, h, w], images_per_s=batch / (r['median_ms'] / 1e3))
        rows.append(r)
        print(
            f'  {name:5s} {label:30s} {r["median_ms"]:9.2f} ms {r["images_per_s"]:9.1f} img/s' +
            (f' {r["peak_mem_mib"]:8.0f} MiB' if 'peak_mem_mib' in r else ''),
            flush=True)
        if 'profile' in r:
            print_profile(r['profile'], indent='        ')
        del model, fn
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    # ratios against the plain-PyTorch run of the same arch, and of the first MAViT for the peers
    base_rows = {r['model'].split(' ')[0]: r for r in rows if r['model'].endswith('(off)')}
    first = next(iter(base_rows.values()), None)
    for r in rows:
        base = base_rows.get(r['model'].split(' ')[0]) or first
        if base:
            r['speedup_vs_off'] = base['median_ms'] / r['median_ms']
            if 'peak_mem_mib' in r and 'peak_mem_mib' in base:
                r['memory_vs_off'] = r['peak_mem_mib'] / base['peak_mem_mib']
    return rows


def attention_sweep(args, device) -> List[dict]:
    """One MAViT-T stage-1 attention layer (C=64, 1 head): MALA vs softmax over image sizes."""
    from mavit_mm.models.layers import MALAttention, RoPESoftmaxAttention, RotaryEmbedding2d
    layers = (('MALA (naive)', MALAttention, False), ('MALA (Triton)', MALAttention, True),
              ('softmax (SDPA)', RoPESoftmaxAttention, False))
    rows = []
    rope = RotaryEmbedding2d(64, 1).to(device)
    for res in args.sweep_sizes:
        hw = (res // 4, res // 4)
        x = torch.randn(1, 64, *hw, device=device)
        sin_cos = rope(hw)
        for label, cls, fast in layers:
            layer = cls(64, 1).to(device).eval()
            layer.use_kernels = fast
            inp = x.contiguous(memory_format=torch.channels_last) if fast else x

            def fn():
                with torch.no_grad(), autocast(device, args.precision):
                    return layer(inp, sin_cos)

            try:
                r = measure(fn, device, args.warmup, args.repeats)
            except torch.OutOfMemoryError:
                r = {'median_ms': math.nan, 'error': 'out of memory'}
            r.update(image=res, tokens=hw[0] * hw[1], attention=label)
            rows.append(r)
            print(
                f'  sweep {res:5d}^2 ({hw[0] * hw[1]:7d} tokens) {label:17s} {r["median_ms"]:9.3f} ms' +
                (f' {r["peak_mem_mib"]:8.0f} MiB' if 'peak_mem_mib' in r else ''),
                flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    return rows


def plot_sweep(rows: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mavit_mm.utils.fileio import atomic_write
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r['attention'] for r in rows):
        pts = [r for r in rows if r['attention'] == label]
        xs = [r['image'] for r in pts]
        axes[0].plot(xs, [r['median_ms'] for r in pts], 'o-', label=label)
        if all('peak_mem_mib' in r for r in pts):
            axes[1].plot(xs, [r['peak_mem_mib'] for r in pts], 'o-', label=label)
    axes[0].set(
        xlabel='image side (px), stage-1 tokens = (side/4)^2',
        ylabel='median time (ms)',
        xscale='log',
        yscale='log',
        title='one attention layer, C=64')
    axes[1].set(
        xlabel='image side (px)', ylabel='peak memory (MiB)', xscale='log', yscale='log', title='peak memory (CUDA)')
    for ax in axes:
        ax.legend()
        ax.grid(True, which='both', alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=120)


def run(args: argparse.Namespace) -> dict:
    device = check_device(args.device)
    try:
        models = mavit_models(args.arch, args.fast_path, args.with_cp, args.cuda_graphs)
    except ValueError as e:
        raise UsageError(str(e)) from e
    peers = available_peers()
    names = list(peers) if args.peers == ['all'] else args.peers
    unknown = [n for n in names if n not in peers]
    if unknown:
        raise UsageError(f'--peers: {unknown} not installed here; choose from {sorted(peers)} (or all)')
    models.update({n: peers[n] for n in names})
    env = environment()
    print_env(env)
    print(f'# precision: {args.precision}' + (f', CUDA graphs: {args.cuda_graphs}' if args.cuda_graphs else ''))
    rows, sweep = [], []
    with no_tf32() if args.precision == 'fp32' else contextlib.nullcontext():
        for setting in args.settings:
            rows += bench_setting(setting, models, args, device)
        if args.sweep:
            sweep = attention_sweep(args, device)
            plot_sweep(sweep, args.sweep, f'{env["device"]}, torch {env["torch"]}, {args.precision}, '
                       f'median of {args.repeats}')
    nan = float('nan')
    print('\n| setting | model | median ms | img/s | peak MiB | speed-up vs off | memory vs off |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["setting"]} | {r["model"]} | {r["median_ms"]:.2f} | {r["images_per_s"]:.1f} | '
              f'{r.get("peak_mem_mib", nan):.0f} | {r.get("speedup_vs_off", nan):.2f} | '
              f'{r.get("memory_vs_off", nan):.2f} |')
    return dict(env=env, precision=args.precision, cuda_graphs=args.cuda_graphs, rows=rows, sweep=sweep)
