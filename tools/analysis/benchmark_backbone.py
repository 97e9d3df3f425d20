"""MAViT backbones, reference path vs fast path, beside peer backbones, on the same inputs in one run.

    python tools/analysis/benchmark_backbone.py --out bench.json                  # GPU, bf16 autocast
    python tools/analysis/benchmark_backbone.py --archs t --settings seg --sweep sweep.png
    python tools/analysis/benchmark_backbone.py --device cpu --archs t --peers --settings cls \
        --batch-scale 0.03 --repeats 2 --warmup 1                                 # smoke test on CPU

Settings (backbone only, as the paper's Figs. 5-6 and a detection training step):
  cls    224x224, batch 64, eval forward
  seg    512x2048, batch 1, eval forward
  train  2 x 800x1344, forward + backward (loss = sum of the four outputs' means), train mode
Models: MAViT-{T,S,B,L} with fast_path='off' (reference) and each of --modes ('kernels': Triton
MALA + channels-last; 'graphs': that replayed from CUDA graphs, MAViT(cuda_graphs='all'), inference
and training step; 'compile': kernels plus torch.compile'd blocks, minutes of compiling first;
--with-cp adds their training step with MAViT(with_cp=...)), and
Swin-T, ConvNeXt-T, ResNet-50 from the installed mmpretrain. Median of --repeats after --warmup,
images/s, peak memory after warm-up (with CUDA graphs: the replays' peak plus what the graphs' memory
pool holds beyond it); ratios against the same arch's reference path. --sweep
times one stage-1 attention layer (MALA vs softmax through SDPA) from 256^2 to 2048^2 images.
"""
import argparse
import json
import math
import sys
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from mavit_mm import MAViT
from mavit_mm.analysis.benchmarking import environment, measure
from mavit_mm.models.layers.cuda_graphs import graph_pool_bytes
from mavit_mm.models.layers.mala import MALAttention
from mavit_mm.models.layers.rotary import RotaryEmbedding2d
from mavit_mm.models.layers.softmax_attention import RoPESoftmaxAttention
from mavit_mm.utils.fileio import atomic_write, write_text_atomic

SETTINGS: Dict[str, Tuple[Tuple[int, int], int, bool]] = {  # (H, W), batch, train
    'cls': ((224, 224), 64, False), 'seg': ((512, 2048), 1, False), 'train': ((800, 1344), 2, True)}


def peer_backbones() -> Dict[str, Callable[[], nn.Module]]:
    import mavit_mm.classification  # noqa: F401  (mmpretrain.models beside transformers 5)
    from mmpretrain.models.backbones import ConvNeXt, ResNet, SwinTransformer
    return {'Swin-T': lambda: SwinTransformer(arch='tiny', out_indices=(0, 1, 2, 3), pad_small_map=True),
            'ConvNeXt-T': lambda: ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False),
            'ResNet-50': lambda: ResNet(depth=50, out_indices=(0, 1, 2, 3))}


WITH_CP = {'ffn': 'ffn', 'block': 'block', 'stem': 'stem', 'ffn+stem': ('ffn', 'stem')}


def step_fn(model: nn.Module, x: torch.Tensor, train: bool, amp: bool) -> Callable[[], object]:
    device_type = x.device.type
    params = list(model.parameters())

    def forward():
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            return model(x)

    if not train:
        def infer():
            with torch.no_grad():
                return forward()
        return infer

    def train_step():
        outs = forward()
        loss = sum(o.float().mean() for o in outs)
        loss.backward()
        for p in params:
            p.grad = None
    return train_step


def bench_setting(name: str, models: Dict[str, Callable[[], nn.Module]], args, device) -> List[dict]:
    (h, w), batch, train = SETTINGS[name]
    batch = max(1, round(batch * args.batch_scale))
    h, w = (max(32, int(h * args.size_scale)), max(32, int(w * args.size_scale)))
    x = torch.randn(batch, 3, h, w, device=device)
    rows = []
    for label, make in models.items():
        if not train and 'with_cp=' in label:
            continue  # checkpointing changes training only
        model = make().to(device)
        model.train(train)  # some mmpretrain backbones' train() returns None
        graphed = getattr(model, 'cuda_graphs', False) and device.type == 'cuda'
        try:
            fn = step_fn(model, x, train, args.amp)
            # training graphs capture at the second call: settle after the capture, then reset the peak
            r = measure(fn, device, args.warmup, args.repeats, settle=3 if graphed else 1)
            if graphed:  # memory the graphs' pool holds beyond the live tensors counted in the peak
                reserved, allocated = graph_pool_bytes(model)
                r['graph_pool_idle_mib'] = (reserved - allocated) / 2**20
                r['peak_mem_mib'] += r['graph_pool_idle_mib']
        except torch.OutOfMemoryError:
            r = {'median_ms': math.nan, 'error': 'out of memory'}
        r.update(setting=name, model=label, shape=[batch, 3, h, w],
                 images_per_s=batch / (r['median_ms'] / 1e3))
        rows.append(r)
        print(f'  {name:5s} {label:22s} {r["median_ms"]:9.2f} ms {r["images_per_s"]:9.1f} img/s'
              + (f' {r["peak_mem_mib"]:8.0f} MiB' if 'peak_mem_mib' in r else ''), flush=True)
        del model, fn
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    # ratios against the reference path of the same arch, and of MAViT-T for the peers
    ref = {r['model'].split(' ')[0]: r for r in rows if r['model'].endswith('(reference)')}
    for r in rows:
        base = ref.get(r['model'].split(' ')[0]) or ref.get('MAViT-T')
        if base:  # the reference rows get 1
            r['speedup_vs_reference'] = base['median_ms'] / r['median_ms']
            if 'peak_mem_mib' in r and 'peak_mem_mib' in base:
                r['memory_vs_reference'] = r['peak_mem_mib'] / base['peak_mem_mib']
                r['reserved_vs_reference'] = r['peak_reserved_mib'] / base['peak_reserved_mib']
    return rows


SWEEP_LAYERS = (('MALA (reference)', MALAttention, False), ('MALA (Triton)', MALAttention, True),
                ('softmax (SDPA)', RoPESoftmaxAttention, False))


def attention_sweep(args, device) -> List[dict]:
    """One MAViT-T stage-1 attention layer (C=64, 1 head): MALA vs softmax over image sizes."""
    rows = []
    c, heads = 64, 1
    rope = RotaryEmbedding2d(c, heads).to(device)
    for res in args.sweep_sizes:
        hw = (res // 4, res // 4)
        x = torch.randn(1, c, *hw, device=device)
        sin_cos = rope(hw)
        for label, cls, fast in SWEEP_LAYERS:
            layer = cls(c, heads).to(device).eval()
            layer.use_kernels = fast
            inp = x.contiguous(memory_format=torch.channels_last) if fast else x

            def fn():
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                    return layer(inp, sin_cos)
            try:
                r = measure(fn, device, args.warmup, args.repeats)
            except torch.OutOfMemoryError:
                r = {'median_ms': math.nan, 'error': 'out of memory'}
            r.update(image=res, tokens=hw[0] * hw[1], attention=label)
            rows.append(r)
            print(f'  sweep {res:5d}^2 ({hw[0] * hw[1]:7d} tokens) {label:17s} {r["median_ms"]:9.3f} ms'
                  + (f' {r["peak_mem_mib"]:8.0f} MiB' if 'peak_mem_mib' in r else ''), flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    return rows


def plot_sweep(rows: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, _, _ in SWEEP_LAYERS:
        pts = [r for r in rows if r['attention'] == label]
        xs = [r['image'] for r in pts]
        axes[0].plot(xs, [r['median_ms'] for r in pts], 'o-', label=label)
        if all('peak_mem_mib' in r for r in pts):
            axes[1].plot(xs, [r['peak_mem_mib'] for r in pts], 'o-', label=label)
    axes[0].set(xlabel='image side (px), stage-1 tokens = (side/4)^2', ylabel='median time (ms)',
                xscale='log', yscale='log', title='one attention layer, C=64')
    axes[1].set(xlabel='image side (px)', ylabel='peak memory (MiB)', xscale='log', yscale='log',
                title='peak memory (CUDA)')
    for ax in axes:
        ax.legend()
        ax.grid(True, which='both', alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=120)


def profile_modes(args, device) -> None:
    """Where the time goes: torch.profiler's top kernels for MAViT-T, per mode: forwards of one image of
    ``--profile-shape`` (512x2048), or with ``--profile-train`` training steps on two."""
    from torch.profiler import ProfilerActivity, profile
    train = args.profile_train
    x = torch.randn(2 if train else 1, 3, *args.profile_shape, device=device)
    lines = []
    for mode in ['off'] + list(args.modes):
        model = MAViT(arch='t', fast_path='kernels' if mode == 'graphs' else mode,
                      cuda_graphs='all' if mode == 'graphs' else False).to(device).train(train)
        fn = step_fn(model, x, train, args.amp)
        measure(fn, device, 3, 3)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        with profile(activities=activities) as prof:
            for _ in range(5):
                fn()
            if device.type == 'cuda':
                torch.cuda.synchronize()
        sort = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
        what = f'{x.shape[0]} x {x.shape[2]}x{x.shape[3]}, 5 ' + ('training steps' if train else 'forwards')
        lines += [f'## MAViT-T fast_path={mode!r}, {what}',
                  prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=70)]
    with atomic_write(args.profile) as f:
        f.write('\n'.join(lines).encode())
    print('\n'.join(lines)[:6000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', nargs='*', default=['t', 's', 'b', 'l'])
    parser.add_argument('--modes', nargs='*', default=['kernels', 'graphs', 'compile'],
                        choices=['kernels', 'graphs', 'compile'],
                        help="fast-path modes to time beside the reference (fast_path='off'); graphs: "
                        "'kernels' with cuda_graphs='all'")
    parser.add_argument('--with-cp', nargs='*', default=[], choices=list(WITH_CP),
                        help="also time the training step with MAViT(with_cp=...) for each mode "
                        "(graphs: not 'block'); ffn+stem is with_cp=('ffn', 'stem')")
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--peers', nargs='*', default=None,
                        help='peer backbones (default all: Swin-T ConvNeXt-T ResNet-50); none if empty')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--fp32', dest='amp', action='store_false', help='fp32 instead of bf16 autocast')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--batch-scale', type=float, default=1.0, help='scale the batch sizes (smoke tests)')
    parser.add_argument('--size-scale', type=float, default=1.0, help='scale the image sizes (smoke tests)')
    parser.add_argument('--sweep', help='also run the attention sweep and draw it to this PNG')
    parser.add_argument('--sweep-sizes', type=int, nargs='+', default=[256, 512, 1024, 1536, 2048])
    parser.add_argument('--profile', help='profile MAViT-T (reference and each mode) on --profile-shape; '
                        'write the top kernels to this text file')
    parser.add_argument('--profile-shape', type=int, nargs=2, default=(512, 2048), metavar=('H', 'W'))
    parser.add_argument('--profile-train', action='store_true',
                        help='profile training steps on 2 images of --profile-shape instead of forwards')
    parser.add_argument('--out', help='write every figure as json')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('benchmark_backbone: no CUDA device; pass --device cpu')

    env = environment()
    print('\n'.join(f'# {k}: {v}' for k, v in env.items()))
    print(f'# precision: {"bf16 autocast" if args.amp else "fp32"}')
    models: Dict[str, Callable[[], nn.Module]] = {}
    for a in args.archs:
        models[f'MAViT-{a.upper()} (reference)'] = lambda a=a: MAViT(arch=a, fast_path='off')
        for mode in args.modes:
            for cp in [None] + [c for c in args.with_cp if not (mode == 'graphs' and c == 'block')]:
                label = f'MAViT-{a.upper()} ({mode}' + (f', with_cp={cp})' if cp else ')')
                models[label] = lambda a=a, mode=mode, cp=cp: MAViT(
                    arch=a, fast_path='kernels' if mode == 'graphs' else mode, with_cp=WITH_CP[cp] if cp else False,
                    cuda_graphs='all' if mode == 'graphs' else False)
    peers = peer_backbones()
    for name in (list(peers) if args.peers is None else args.peers):
        models[name] = peers[name]
    rows = []
    for setting in args.settings:
        rows += bench_setting(setting, models, args, device)
    sweep = attention_sweep(args, device) if args.sweep else []
    if args.sweep:
        plot_sweep(sweep, args.sweep, f'{env["device"]}, torch {env["torch"]}, '
                   f'{"bf16 autocast" if args.amp else "fp32"}, median of {args.repeats}')

    if args.profile:
        profile_modes(args, device)
    nan = float('nan')
    print('\n| setting | model | median ms | img/s | peak MiB | speed-up vs ref | memory vs ref '
          '| peak reserved MiB | reserved vs ref |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["setting"]} | {r["model"]} | {r["median_ms"]:.2f} | {r["images_per_s"]:.1f} | '
              f'{r.get("peak_mem_mib", nan):.0f} | {r.get("speedup_vs_reference", nan):.2f} | '
              f'{r.get("memory_vs_reference", nan):.2f} | {r.get("peak_reserved_mib", nan):.0f} | '
              f'{r.get("reserved_vs_reference", nan):.2f} |')
    if args.out:
        write_text_atomic(json.dumps(dict(env=env, amp=args.amp, rows=rows, sweep=sweep), indent=2) + '\n',
                          args.out)


if __name__ == '__main__':
    main()
