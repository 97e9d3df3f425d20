"""Compile the fast path's Triton kernels in parallel worker processes before a model first needs them.

Triton compiles a kernel the first time it is launched with a new specialization, one after another in
the launching process, and keeps the result in its on-disk cache (``TRITON_CACHE_DIR``, by default
``~/.triton/cache``). A MAViT training step on a cold cache launches about ten such variants (MALA's
forward and backward passes, the depthwise convolutions' forward, input-gradient and weight-gradient
kernels per kernel size), each compiled for one to several seconds. :func:`warm_up` runs one small launch
of each variant in a worker process of its own, all at once, and returns when they have finished: the
variants are then in the cache and the model's own launches load them instead of compiling them.

A job is a tuple of plain values::

    ('mala', head_dim, heads, dtype, 'forward' | 'backward')
    ('rotary', head_dim, heads, dtype, 'forward' | 'backward')
    ('depthwise', kernel_size, channels, dtype, 'forward' | 'forward_nobias' | 'input_grad' | 'grad_weight'
                 | 'residual' | 'residual_nobias' | 'residual_input_grad' | 'residual_grad_weight')

with ``dtype`` one of ``'float32' | 'float16' | 'bfloat16'``. A job launches the same kernels with the
same specializing arguments as the model: Triton specializes integer arguments on being 1 or a multiple
of 16, so the jobs use the model's own head counts and channel widths, and head views of a channels-last
``qkvo`` map as the attention does.

A finished warm-up leaves a marker file in the cache directory, named by a hash of the jobs, the kernel
sources, the device and the Triton / torch versions, so that a later process with the same kernels
skips the workers at once; processes that share the cache warm it up once (a lock file beside the
marker). Set ``MAVIT_KERNEL_WARMUP=0`` to turn the warm-up off; the kernels then compile
on first use, as Triton does by default. A worker that fails costs nothing but its time: the kernel is
compiled on first use instead.
"""
import contextlib
import hashlib
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch

Job = Tuple

_DTYPES: Dict[str, torch.dtype] = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# the warm-ups done in this process, by (device, jobs)
_DONE: set = set()
# seconds to wait for the workers before the model goes on (and compiles what is missing itself)
TIMEOUT = 300.0


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``'float16'`` (a job's dtype field)."""
    return str(dtype).replace('torch.', '')


def enabled() -> bool:
    """Whether warm-ups run: not with ``MAVIT_KERNEL_WARMUP=0``, nor under Triton's CPU interpreter."""
    return os.environ.get('MAVIT_KERNEL_WARMUP', '1') != '0' and os.environ.get('TRITON_INTERPRET') != '1'


def cache_dir() -> str:
    """Triton's kernel cache directory in this process."""
    try:
        from triton import knobs
        return knobs.cache.dir
    except (ImportError, AttributeError):  # Triton before 3.4
        return os.environ.get('TRITON_CACHE_DIR') or osp.join(osp.expanduser('~'), '.triton', 'cache')


def _marker(device: torch.device, jobs: Sequence[Job]) -> str:
    """The marker file of a finished warm-up of ``jobs`` on ``device``'s kind of GPU."""
    import triton

    from .depthwise import triton as dw_kernels
    from .mala import triton as mala_kernels
    digest = hashlib.sha256()
    for module in (mala_kernels, dw_kernels):
        with open(module.__file__, 'rb') as f:
            digest.update(f.read())
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type
    digest.update(json.dumps([sorted(map(list, jobs)), name, triton.__version__, torch.__version__]).encode())
    return osp.join(cache_dir(), 'mavit_mm_warmup', digest.hexdigest()[:32])


def warm_up(jobs: Sequence[Job], device: torch.device, timeout: float = TIMEOUT) -> bool:
    """Compile the kernels of ``jobs`` for ``device`` in parallel worker processes and wait for them.

    Processes that share the cache (the ranks of a launch, runs side by side) warm it up once: the first
    takes a lock file beside the marker and runs the workers, the others wait for its marker instead of
    compiling the same kernels again.

    Returns True when the kernels were compiled here or already were (a marker in the cache, or an
    earlier call of this process), False when the warm-up was off, not possible or failed (each failure
    with a warning); the caller runs either way.
    """
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    jobs = sorted(set(map(tuple, jobs)))
    key = (str(device), tuple(jobs))
    if not jobs or not enabled() or key in _DONE:
        return key in _DONE
    _DONE.add(key)
    try:
        marker = _marker(device, jobs)
        if osp.exists(marker):
            return True
        os.makedirs(osp.dirname(marker), exist_ok=True)
        lock = marker + '.lock'
        if not _take(lock):
            return _wait_for(marker, lock, timeout)
        try:
            start = time.time()
            ok = _run_workers(jobs, device, timeout)
            if ok:
                with open(marker + '.tmp', 'w') as f:
                    json.dump({'jobs': jobs, 'seconds': round(time.time() - start, 1)}, f)
                os.replace(marker + '.tmp', marker)
        finally:
            os.remove(lock)
        return ok
    except Exception as e:  # never fail a run over its warm-up: the kernels compile on first use instead
        warnings.warn(
            f'MAViT: the Triton kernel warm-up failed ({type(e).__name__}: {e}); the kernels compile on '
            'first use instead', RuntimeWarning)
        return False


def _take(lock: str) -> bool:
    """Create ``lock`` (holding this host and pid) unless another process holds it; a lock left by a
    process of this host that no longer runs is taken over."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder_alive(lock):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(f'{socket.gethostname()} {os.getpid()}')
        return True
    return False


def _holder_alive(lock: str) -> bool:
    """Whether the process named in ``lock`` may still run (always, for another host's process)."""
    try:
        with open(lock) as f:
            host, pid = f.read().split()
    except (OSError, ValueError):
        return True  # being written just now
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _wait_for(marker: str, lock: str, timeout: float) -> bool:
    """Wait for the process holding ``lock``: True once its ``marker`` exists, False when the lock goes
    without one (its warm-up failed) or after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if osp.exists(marker):
            return True
        if not osp.exists(lock) or not _holder_alive(lock):
            return osp.exists(marker)
        time.sleep(0.2)
    return False


def _run_workers(jobs: List[Job], device: torch.device, timeout: float) -> bool:
    """One worker process per job (at most one per CPU core at a time), all started at once."""
    slots = max(1, min(len(jobs), os.cpu_count() or 1))
    groups = [jobs[i::slots] for i in range(slots)]
    env = dict(os.environ, MAVIT_KERNEL_WARMUP='0', OMP_NUM_THREADS='1')
    procs = [
        subprocess.Popen([sys.executable, '-m', __name__,
                          str(device), json.dumps(group)],
                         env=env,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE,
                         text=True) for group in groups
    ]
    deadline = time.monotonic() + timeout
    failures = []
    for proc, group in zip(procs, groups):
        try:
            _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f'{group}: still compiling after {timeout:.0f} s')
            continue
        if proc.returncode:
            failures.append(f'{group}: {err.strip()[-300:]}')
    if failures:
        warnings.warn(
            'MAViT: the Triton kernel warm-up did not finish (the kernels compile on first use instead): ' +
            '; '.join(failures), RuntimeWarning)
    return not failures


def run_job(job: Job, device: torch.device) -> None:
    """Launch the kernels of one job once, on small inputs, in this process."""
    kind, size, width, dtype, what = job
    dtype = _DTYPES[dtype]
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device, dtype)

    if kind == 'mala':
        from .mala import triton as kernels
        head_dim, heads, n = size, width, 12
        c = heads * head_dim
        qkvo = randn(1, 4 * c, 3, 4).contiguous(memory_format=torch.channels_last)
        q, k, v = (t.reshape(1, heads, head_dim, n).transpose(-2, -1) for t in qkvo.chunk(4, dim=1)[:3])
        theta = torch.rand(n, head_dim, generator=gen).to(device)
        sin, cos, scale = theta.sin(), theta.cos(), head_dim**-0.5
        if what == 'forward':
            kernels.mala_forward(q, k, v, sin, cos, scale)
        elif what == 'backward':
            tile = kernels._tile_width(head_dim)
            f32 = dict(dtype=torch.float32, device=device)
            kv, km, vm = (torch.zeros(heads, tile, tile, **f32), torch.zeros(heads, tile,
                                                                             **f32), torch.zeros(heads, tile, **f32))
            grad = kernels.empty_like_heads(q).normal_()
            kernels.mala_backward(q, k, v, sin, cos, kv, km, vm, grad, scale)
        else:
            raise ValueError(f'unknown MALA job {what!r}')
    elif kind == 'rotary':
        from .rotary import triton as kernels
        head_dim, heads, n = size, width, 12
        qkvo = randn(1, 4 * heads * head_dim, 3, 4).contiguous(memory_format=torch.channels_last)
        q = qkvo.chunk(4, dim=1)[0].reshape(1, heads, head_dim, n).transpose(-2, -1)
        theta = torch.rand(n, head_dim, generator=gen).to(device)
        if what == 'forward':
            kernels.rotary_forward(q, theta.sin(), theta.cos(), dtype)
        elif what == 'backward':
            kernels.rotary_backward(torch.randn_like(q), theta.sin(), theta.cos(), dtype)
        else:
            raise ValueError(f'unknown rotary job {what!r}')
    elif kind == 'depthwise':
        from .depthwise import triton as kernels
        ksize, channels = size, width
        x = randn(1, channels, 5, 6).contiguous(memory_format=torch.channels_last)
        weight = randn(channels, 1, ksize, ksize)
        if what == 'forward':
            kernels.depthwise_forward(x, weight, randn(channels))
        elif what == 'forward_nobias':
            kernels.depthwise_forward(x, weight, None)
        elif what == 'input_grad':
            kernels.depthwise_forward(x, weight, None, flip=True)
        elif what == 'grad_weight':
            kernels.depthwise_grad_weight(x, torch.randn_like(x), weight, with_bias=True)
        elif what in ('residual', 'residual_nobias', 'residual_input_grad', 'residual_grad_weight'):
            # the blocks' x + conv(x): x in fp32 (the residual stream under autocast) or in the weights' dtype
            for skip in {torch.float32, dtype}:
                xs = x.to(skip)
                if what in ('residual', 'residual_nobias'):
                    kernels.depthwise_forward(
                        xs, weight, randn(channels) if what == 'residual' else None, residual=True)
                elif what == 'residual_input_grad':
                    kernels.depthwise_forward(xs, weight, None, residual=True, flip=True)
                else:
                    kernels.depthwise_grad_weight(xs, torch.randn_like(xs), weight, with_bias=True)
        else:
            raise ValueError(f'unknown depthwise job {what!r}')
    else:
        raise ValueError(f'unknown kernel job {kind!r}')


def main(argv: Optional[List[str]] = None) -> None:
    """Worker entry: ``python -m mavit_mm.ops.warmup DEVICE JOBS_JSON``."""
    device, jobs = (argv or sys.argv[1:])[:2]
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    for job in json.loads(jobs):
        run_job(tuple(job), device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


if __name__ == '__main__':
    main()
