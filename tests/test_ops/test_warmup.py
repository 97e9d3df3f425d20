"""The parallel Triton kernel warm-up (``mavit_mm/ops/warmup.py``): which kernel variants a MAViT
launches, the workers' jobs, and on a GPU that a warmed-up cache leaves the model nothing to compile."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from mavit_mm import MAViT
from mavit_mm.models.layers.warmup import kernel_jobs
from mavit_mm.ops import warmup
from mavit_mm.ops.mala import interpreting, triton_available

CUDA = torch.cuda.is_available()
KERNELS = triton_available() and (CUDA or interpreting())
DEVICE = 'cuda' if CUDA and not interpreting() else 'cpu'


def test_jobs_of_mavit_t_are_one_per_compiled_variant():
    """MAViT-T: MALA (head_dim 64) in stages 1-2 with 1 and 2 heads (Triton specializes an integer
    argument equal to 1), softmax attention in stages 3-4 (the rotary kernels: head_dim 64, 4 and 8 heads,
    one class); depthwise 3x3 (position, FFN: both added to their input, the residual form) and 5x5 (LePE)
    at widths 64-2048, all multiples of 16, so one variant per kernel size."""
    model = MAViT(arch='t')
    train = [('depthwise', 3, 16, 'float16', what)
             for what in ('residual', 'residual_grad_weight', 'residual_input_grad')]
    train += [('depthwise', 5, 16, 'float16', what) for what in ('forward', 'grad_weight', 'input_grad')]
    train += [('mala', 64, heads, 'float16', what) for heads in (1, 2) for what in ('backward', 'forward')]
    train += [('rotary', 64, 2, 'float16', what) for what in ('backward', 'forward')]
    assert kernel_jobs(model, torch.float16, train=True) == train
    test = [('depthwise', 3, 16, 'bfloat16', 'residual'), ('depthwise', 5, 16, 'bfloat16', 'forward'),
            ('mala', 64, 1, 'bfloat16', 'forward'), ('mala', 64, 2, 'bfloat16', 'forward'),
            ('rotary', 64, 2, 'bfloat16', 'forward')]
    assert kernel_jobs(model, torch.bfloat16, train=False) == test
    assert kernel_jobs(model, torch.float64, train=True) == []  # the kernels take no float64
    assert kernel_jobs(MAViT(arch='t', fast_path='off'), torch.float16, train=True) == []
    assert {j[1:3] for j in kernel_jobs(MAViT(arch='b'), torch.float32, False) if j[0] == 'mala'} == {(96, 1), (96, 2)}


def test_warm_up_is_off_on_request_and_without_jobs(monkeypatch):
    monkeypatch.setattr(warmup, '_DONE', set())
    monkeypatch.setenv('MAVIT_KERNEL_WARMUP', '0')
    assert not warmup.enabled()
    assert warmup.warm_up([('depthwise', 3, 16, 'float32', 'forward')], torch.device('cpu')) is False
    monkeypatch.setattr(warmup, '_run_workers', lambda *a: pytest.fail('no worker without jobs'))
    monkeypatch.delenv('MAVIT_KERNEL_WARMUP')
    assert warmup.warm_up([], torch.device('cpu')) is False


def test_a_failed_worker_warns_and_the_run_goes_on(monkeypatch, tmp_path):
    """A job that cannot run (here: an unknown kind) costs a warning, never the run; no marker is left
    (a later run tries again) and no lock (processes waiting for this one go on)."""
    monkeypatch.setattr(warmup, '_DONE', set())
    monkeypatch.setattr(warmup, 'enabled', lambda: True)
    monkeypatch.setattr(warmup, 'cache_dir', lambda: str(tmp_path))
    with pytest.warns(RuntimeWarning, match='did not finish'):
        assert warmup.warm_up([('nonsense', 3, 16, 'float32', 'forward')], torch.device('cpu')) is False
    assert list((tmp_path / 'mavit_mm_warmup').iterdir()) == []


def test_processes_sharing_a_cache_warm_it_up_once(monkeypatch, tmp_path):
    """A process that finds the lock of a running warm-up waits for its marker instead of starting
    workers; a lock whose process has ended is taken over."""
    monkeypatch.setattr(warmup, '_DONE', set())
    monkeypatch.setattr(warmup, 'enabled', lambda: True)
    monkeypatch.setattr(warmup, 'cache_dir', lambda: str(tmp_path))
    jobs = [('depthwise', 3, 16, 'float32', 'forward')]
    marker = warmup._marker(torch.device('cpu'), jobs)
    os.makedirs(os.path.dirname(marker))
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        with open(marker + '.lock', 'w') as f:
            f.write(f'{socket.gethostname()} {holder.pid}')
        monkeypatch.setattr(warmup, '_run_workers', lambda *a: pytest.fail('a second warm-up started workers'))
        finish = threading.Timer(0.5, lambda: open(marker, 'w').close())  # the holder's marker, a little later
        finish.start()
        assert warmup.warm_up(jobs, torch.device('cpu'))
        finish.join()
    finally:
        holder.kill()
        holder.wait()
    os.remove(marker)
    monkeypatch.setattr(warmup, '_DONE', set())
    runs = []
    monkeypatch.setattr(warmup, '_run_workers', lambda *a: runs.append(a) or True)
    assert warmup.warm_up(jobs, torch.device('cpu'))  # the lock of the ended process is taken over
    assert len(runs) == 1 and os.path.exists(marker) and not os.path.exists(marker + '.lock')


@pytest.mark.skipif(not KERNELS, reason='Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1 on CPU)')
@pytest.mark.parametrize(
    'job', [
        ('mala', 64, 1, 'float32', 'forward'),
        ('mala', 32, 2, 'float32', 'backward'),
        ('depthwise', 3, 16, 'float32', 'forward'),
        ('depthwise', 5, 2, 'float32', 'forward_nobias'),
        ('depthwise', 3, 16, 'float32', 'grad_weight'),
        ('depthwise', 3, 16, 'float16', 'residual'),
        ('depthwise', 3, 2, 'float16', 'residual_input_grad'),
        ('depthwise', 5, 16, 'float32', 'input_grad'),
        ('depthwise', 3, 16, 'float32', 'residual_nobias'),
        ('depthwise', 3, 16, 'float16', 'residual_grad_weight'),
        ('rotary', 64, 2, 'float32', 'forward'),
        ('rotary', 32, 1, 'float16', 'backward'),
    ],
    ids=lambda j: '-'.join(map(str, j)))
def test_each_kind_of_job_launches_its_kernels(job):
    warmup.run_job(job, torch.device(DEVICE))


CHILD = textwrap.dedent("""
    import json, os, sys, torch
    from mavit_mm import MAViT
    from mavit_mm.models.layers.warmup import kernel_jobs
    from mavit_mm.ops import warmup

    def entries():
        root = warmup.cache_dir()
        return {d for d in os.listdir(root) if d != 'mavit_mm_warmup'} if os.path.isdir(root) else set()

    model = MAViT(arch='t').cuda()
    jobs = kernel_jobs(model, torch.float16, train=True)
    assert warmup.warm_up(jobs, torch.device('cuda'))
    warmed = entries()
    x = torch.randn(2, 3, 160, 224, device='cuda')
    with torch.autocast('cuda', dtype=torch.float16):
        out = model(x)
    sum(o.float().square().mean() for o in out).backward()
    torch.cuda.synchronize()
    print(json.dumps({'warmed': len(warmed), 'new': sorted(entries() - warmed)}))
""")


@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
def test_after_the_warm_up_a_training_step_compiles_nothing(tmp_path):
    """In a fresh process with an empty Triton cache: the warm-up's workers fill the cache, and a whole
    MAViT-T fp16 training step (the backbone's own first forward also asks for the warm-up, which a
    marker now skips) then adds no kernel to it."""
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('MAVIT_KERNEL_WARMUP', None)
    out = subprocess.run([sys.executable, '-c', CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['warmed'] >= 8, result  # the four MALA and four depthwise kernels at least
    assert result['new'] == [], f'kernels compiled by the step itself: {result["new"]}'
