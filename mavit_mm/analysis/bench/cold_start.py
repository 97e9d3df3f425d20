"""``benchmark.py cold-start``: a MAViT training step on an empty Triton kernel cache, with and without the
parallel kernel warm-up (:mod:`mavit_mm.ops.warmup`).

The micro view of the real run's cold start: each row is a fresh process with a new, empty
``TRITON_CACHE_DIR`` that builds the backbone on the GPU and times its first two fp16-autocast training
steps (forward + backward, 2 images at ``--shape``): the first step pays for every kernel the backbone
compiles (one after another with ``MAVIT_KERNEL_WARMUP=0``; in parallel worker processes with the
default warm-up), the second is a step at a seen size. A third row repeats the warm-up setting with the
cache the second row left, as a machine that has run MAViT before.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from ..benchmarking import environment
from . import UsageError, print_env

CHILD = textwrap.dedent("""
    import json, os, sys, time, torch
    from mavit_mm import MAViT
    arch, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = MAViT(arch=arch).cuda()
    x = torch.randn(2, 3, h, w, device='cuda')
    times = []
    for _ in range(2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast('cuda', dtype=torch.float16):
            out = model(x)
        sum(o.float().mean() for o in out).backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    cache = os.environ['TRITON_CACHE_DIR']
    print(json.dumps({'first_s': times[0], 'second_ms': 1e3 * times[1],
                      'cached_kernels': len([d for d in os.listdir(cache) if d != 'mavit_mm_warmup'])}))
""")


def _step(arch: str, shape, cache: str, warmup: bool) -> dict:
    env = dict(os.environ, TRITON_CACHE_DIR=cache, MAVIT_KERNEL_WARMUP='1' if warmup else '0')
    out = subprocess.run([sys.executable, '-c', CHILD, arch, *map(str, shape)],
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=900)
    if out.returncode:
        raise RuntimeError(f'the step failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    import torch
    if not torch.cuda.is_available():
        raise UsageError('cold-start measures Triton compilation on a GPU: it needs a CUDA device')
    env = environment()
    print_env(env)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = (('compiled on first use (MAVIT_KERNEL_WARMUP=0), empty cache', 'off',
                     False), ('parallel warm-up (default), empty cache', 'on', True),
                    ('parallel warm-up (default), the cache of the row above', 'on', True))
        for label, folder, warmup in settings:
            row = dict(setting=label, **_step(args.arch, args.shape, os.path.join(tmp, folder), warmup))
            rows.append(row)
            print(f"{label:60s} first step {row['first_s']:6.1f} s   second step {row['second_ms']:7.1f} ms   "
                  f"kernels in the cache {row['cached_kernels']}")
    return dict(env=env, arch=args.arch, shape=list(args.shape), rows=rows)
