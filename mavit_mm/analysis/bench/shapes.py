"""``benchmark.py shapes``: what a new input size costs, per convolution and per backbone training step.

The micro view behind ``real-run``: detection batches change size almost every iteration, and a step at a
size seen for the first time pays whatever a library plans or compiles per size. Two tables:

- per operation (fp16, channels-last and NCHW, forward + backward): the first call at each of ``--sizes``
  new stage-1-sized inputs against a second call at the same size (median over the sizes): cuDNN's 1x1,
  depthwise 3x3 / 5x5 and dense stride-2 3x3 convolutions, the 1x1 as a GEMM, the depthwise ones as
  :mod:`mavit_mm.ops.depthwise`'s Triton kernels;
- per backbone (fp16 autocast, 2 images, forward + backward): a step at each of ``--sizes`` new
  COCO-like padded sizes against a step at a size seen before: MAViT-T on its fast path, MAViT-T with the
  blocks' convolutions left to cuDNN (``--plain-convs`` adds that row), and torchvision's Swin-T;
- per detector neck and head (fp16 autocast, forward + backward of mmdet's FPN on MAViT-T's feature
  widths and an RPN head over its five levels), over a sequence of ``--sizes`` COCO-like padded sizes
  none of which the process has seen: cuDNN on every size, and the convolutions in size buckets
  (:class:`mavit_mm.engine.conv_buckets.SizeBucketConv2d`, where sizes of one bucket plan once);
- where a new size's extra time goes (``profile``): MAViT's training step (``--arch``, fp16 autocast, 2
  images, its default fast path) under ``torch.profiler``, the host (CPU) time of each operator summed over
  ``--sizes`` steps at new COCO-like padded sizes against as many steps at one size seen before, the
  operators whose time grows most first.

``--tables`` picks among them.
"""
import argparse
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Tuple

import torch
import torch.nn.functional as F

from ..benchmarking import environment
from . import UsageError, check_device, print_env


def _timed(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


def _ops() -> Dict[str, Tuple[int, Tuple[int, ...], Callable]]:
    from mavit_mm.ops.conv import depthwise_conv, pointwise_conv
    return {
        'conv 1x1 64->256 (cuDNN)': (64, (256, 64, 1, 1), lambda x, w: F.conv2d(x, w)),
        'conv 1x1 64->256 (GEMM)': (64, (256, 64, 1, 1), lambda x, w: pointwise_conv(x, w, None)),
        'depthwise 3x3, 224 ch (cuDNN)': (224, (224, 1, 3, 3), lambda x, w: F.conv2d(x, w, padding=1, groups=224)),
        'depthwise 3x3, 224 ch (Triton)': (224, (224, 1, 3, 3), lambda x, w: depthwise_conv(x, w)),
        'depthwise 5x5, 64 ch (cuDNN)': (64, (64, 1, 5, 5), lambda x, w: F.conv2d(x, w, padding=2, groups=64)),
        'depthwise 5x5, 64 ch (Triton)': (64, (64, 1, 5, 5), lambda x, w: depthwise_conv(x, w)),
        'conv 3x3 s2 64->128 (cuDNN)': (64, (128, 64, 3, 3), lambda x, w: F.conv2d(x, w, stride=2, padding=1)),
    }


def per_op(device: torch.device, sizes: int) -> List[dict]:
    rows = []
    warm = torch.randn(2, 224, 32, 32, device=device, dtype=torch.float16)
    for layout in ('channels_last', 'nchw'):
        for k, (name, (c, wshape, fn)) in enumerate(_ops().items()):
            w = (0.1 * torch.randn(wshape, device=device)).half().requires_grad_(True)
            fn(warm[:, :c].contiguous(memory_format=torch.channels_last), w).sum().backward()  # compile / load
            first, seen = [], []
            for i in range(sizes):
                # sizes no other row used: every row starts cold
                x = torch.randn(2, c, 200, 200 + 8 * i + 97 * k + 3 * (layout == 'nchw'), device=device).half()
                if layout == 'channels_last':
                    x = x.contiguous(memory_format=torch.channels_last)
                x.requires_grad_(True)

                def step():
                    y = fn(x, w)
                    y.backward(torch.ones_like(y))

                first.append(_timed(step))
                seen.append(_timed(step))
            rows.append(
                dict(op=name, layout=layout, first_ms=statistics.median(first), seen_ms=statistics.median(seen)))
            r = rows[-1]
            print(
                f'  {layout:13s} {name:32s} new size {r["first_ms"]:8.2f} ms   seen {r["seen_ms"]:6.2f} ms', flush=True)
    return rows


def _swin_t() -> torch.nn.Module:
    import torchvision

    class Features(torch.nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.features = torchvision.models.swin_t().features

        def forward(self, x):
            outs = []
            for i, m in enumerate(self.features):
                x = m(x)
                if i % 2:
                    outs.append(x)
            return outs

    return Features()


def per_backbone(device: torch.device, sizes: int, plain_convs: bool) -> List[dict]:
    from mavit_mm.models.backbones.mavit import MAViT
    models = [('MAViT-T', lambda: MAViT('tiny', norm_cfg=dict(type='BN')))]
    if plain_convs:

        def plain():
            m = MAViT('tiny', norm_cfg=dict(type='BN'))
            for mod in m.modules():
                if hasattr(mod, 'fast_convs'):
                    mod.fast_convs = False  # MALA keeps its kernels
            return m

        models.append(("MAViT-T, blocks' convs on cuDNN", plain))
    models.append(('Swin-T (torchvision)', _swin_t))
    rows = []
    for j, (name, build) in enumerate(models):
        model = build().to(device).train()

        def step(shape):
            with torch.autocast('cuda', dtype=torch.float16):
                loss = sum(o.float().mean() for o in model(torch.randn(2, 3, *shape, device=device)))
            loss.backward()
            model.zero_grad(set_to_none=True)

        step((224, 224))
        shapes = [(800, 1088 + 32 * i) if i % 2 == 0 else (1088 + 32 * i, 800) for i in range(sizes)]
        shapes = [(h + 32 * j, w) for h, w in shapes]  # new to this process for every model
        first = [_timed(lambda: step(s)) for s in shapes]
        seen = [_timed(lambda: step(s)) for s in shapes]
        rows.append(
            dict(
                backbone=name,
                first_ms=statistics.median(first),
                max_first_ms=max(first),
                seen_ms=statistics.median(seen)))
        print(
            f'  {name:32s} new size {rows[-1]["first_ms"]:8.1f} ms (max {rows[-1]["max_first_ms"]:.1f})   '
            f'seen {rows[-1]["seen_ms"]:6.1f} ms',
            flush=True)
    return rows


def _neck_and_head(buckets: bool) -> torch.nn.Module:
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.necks import FPN

    from mavit_mm.engine.conv_buckets import use_conv_size_buckets

    class NeckAndHead(torch.nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.neck = FPN(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=5)
            self.rpn_head = RPNHead(in_channels=256, feat_channels=256)

        def forward(self, feats):
            cls, reg = self.rpn_head(self.neck(feats))
            return sum(c.float().mean() + r.float().mean() for c, r in zip(cls, reg))

    model = NeckAndHead()
    if buckets:
        use_conv_size_buckets(model)
    return model


def per_neck(device: torch.device, sizes: int) -> List[dict]:
    rows = []
    for j, (name, buckets) in enumerate([('FPN + RPN head (cuDNN per size)', False),
                                         ('FPN + RPN head in size buckets', True)]):
        model = _neck_and_head(buckets).to(device).train()

        def step(shape):
            h, w = shape
            feats = [
                torch.randn(2, c, h // s, w // s, device=device, requires_grad=True)
                for c, s in zip((64, 128, 256, 512), (4, 8, 16, 32))
            ]
            with torch.autocast('cuda', dtype=torch.float16):
                loss = model(feats)
            loss.backward()
            model.zero_grad(set_to_none=True)

        step((224, 224))
        # padded COCO batch sizes (multiples of 32 around 800 x 1216), new to this process for every row
        shapes = [(800 + 32 * ((5 * i) % 7), 1056 + 32 * ((3 * i) % 11) + 8 * j) for i in range(sizes)]
        shapes = [(h, w) if i % 2 else (w, h) for i, (h, w) in enumerate(shapes)]
        first = [_timed(lambda: step(s)) for s in shapes]
        seen = [_timed(lambda: step(s)) for s in shapes]
        rows.append(dict(part=name, sequence_ms=statistics.median(first), seen_ms=statistics.median(seen)))
        r = rows[-1]
        print(
            f'  {name:32s} sequence of new sizes {r["sequence_ms"]:7.1f} ms   seen {r["seen_ms"]:6.1f} ms', flush=True)
    return rows


def host_time_by_op(step: Callable[[object], object], inputs: Iterable[object]) -> Dict[str, Tuple[float, float]]:
    """``step(x)`` for each of ``inputs`` under ``torch.profiler`` (CPU activity): per operator name, its self
    host time in ms and its calls, each averaged over the steps."""
    from torch.profiler import ProfilerActivity, profile
    time_ms: Dict[str, float] = defaultdict(float)
    calls: Dict[str, float] = defaultdict(float)
    inputs = list(inputs)
    for x in inputs:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(x)
        for event in prof.key_averages():
            time_ms[event.key] += event.self_cpu_time_total / 1e3 / len(inputs)
            calls[event.key] += event.count / len(inputs)
    return {k: (time_ms[k], calls[k]) for k in time_ms}


def growth_by_op(new: Dict[str, Tuple[float, float]], seen: Dict[str, Tuple[float, float]], top: int) -> List[dict]:
    """The ``top`` operators whose host time per step grows most from ``seen`` to ``new``
    (:func:`host_time_by_op`'s results), with both times and the calls per step at a new size."""
    rows = [
        dict(
            op=k, new_ms=new.get(k, (0.0, 0.0))[0], seen_ms=seen.get(k, (0.0, 0.0))[0], calls=new.get(k, (0.0, 0.0))[1])
        for k in set(new) | set(seen)
    ]
    rows.sort(key=lambda r: r['seen_ms'] - r['new_ms'])
    return rows[:top]


def per_op_profile(device: torch.device, sizes: int, arch: str, top: int = 25) -> dict:
    """The ``profile`` table: host time per step in all operators at ``sizes`` new sizes and at a seen one, and
    the ``top`` operators whose host time grows most (:func:`growth_by_op`)."""
    from mavit_mm.models.backbones.mavit import MAViT
    torch.manual_seed(0)
    model = MAViT(arch, drop_path_rate=0.2).to(device).train()

    def step(shape):
        with torch.autocast('cuda', dtype=torch.float16):
            loss = sum(o.float().mean() for o in model(torch.randn(2, 3, *shape, device=device)))
        loss.backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    seen_shape = (800, 1216)
    for shape in ((224, 224), seen_shape, seen_shape):
        step(shape)
    # padded COCO-like sizes, none seen before: landscape and portrait around 800 x 1216
    sides = [(h, w) for h in (800, 768, 832, 736) for w in range(1056, 1345, 32) if (h, w) != seen_shape]
    shapes = [(h, w) if i % 2 else (w, h) for i, (h, w) in enumerate(sides[:sizes])]
    new = host_time_by_op(step, shapes)
    seen = host_time_by_op(step, [seen_shape] * sizes)
    totals = dict(new_ms=sum(t for t, _ in new.values()), seen_ms=sum(t for t, _ in seen.values()))
    print(
        f'  host time per step (all operators, under the profiler): new size {totals["new_ms"]:.1f} ms, '
        f'seen size {totals["seen_ms"]:.1f} ms',
        flush=True)
    rows = growth_by_op(new, seen, top)
    print(f'  {"operator":56s} {"new size":>9s} {"seen":>8s} {"calls":>7s}')
    for r in rows:
        print(f'  {r["op"][:56]:56s} {r["new_ms"]:6.2f} ms {r["seen_ms"]:5.2f} ms {r["calls"]:7.0f}', flush=True)
    return dict(arch=arch, sizes=sizes, **totals, top=rows)


def run(args: argparse.Namespace) -> dict:
    device = check_device(args.device)
    if device.type != 'cuda':
        raise UsageError('shapes measures cuDNN / Triton per-size costs: it needs a CUDA device')
    env = environment()
    print_env(env)
    result = dict(env=env)
    if 'ops' in args.tables:
        print('per operation, 2 x C x 200 x W fp16, forward + backward:')
        result['ops'] = per_op(device, args.sizes)
    if 'backbones' in args.tables:
        print('per backbone training step, 2 images, fp16 autocast:')
        result['backbones'] = per_backbone(device, args.sizes, args.plain_convs)
    if 'necks' in args.tables:
        print('per detector neck and head training step, 2 images, fp16 autocast:')
        result['necks'] = per_neck(device, args.sizes)
    if 'profile' in args.tables:
        print(f'where a new size\'s host time goes, MAViT-{args.arch.upper()} training step, 2 images, fp16 autocast:')
        result['profile'] = per_op_profile(device, args.sizes, args.arch)
    return result
