"""MALA as one op: ``mala(q, k, v, sin, cos, scale, backend=...)``.

Backends, computing the same function (:mod:`.naive` is the definition):

- ``'naive'``: plain PyTorch, any device (:func:`.naive.mala_attention`).
- ``'triton'``: the fused forward and backward kernels of :mod:`.triton`; CUDA tensors, or CPU
  tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter, for tests).
- ``'auto'``: ``'triton'`` where :func:`kernels_usable` says the kernels can run and passed their
  self-check on this device, else ``'naive'``.
"""
import importlib.util
import os
import warnings
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .naive import EPS, mala_attention, mala_scores, phi

BACKENDS = ('auto', 'naive', 'triton')

# per (device, dtype, backward): did the fused kernels pass their self-check (see check_kernels)
_KERNELS_OK: Dict[Tuple[torch.device, torch.dtype, bool], bool] = {}
# read once: Triton reads TRITON_INTERPRET when it first compiles, and torch.compile traces constants
_TRITON = importlib.util.find_spec('triton') is not None
_INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'


def triton_available() -> bool:
    """Whether the Triton package is installed."""
    return _TRITON


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _INTERPRET


def kernels_can_run(x: Tensor) -> bool:
    """Whether Triton kernels can run on ``x``'s device: CUDA with Triton installed, or CPU under
    Triton's interpreter."""
    return _TRITON and (x.is_cuda or (_INTERPRET and x.device.type == 'cpu'))


# the kernels accumulate in fp32: float64 inputs keep the naive form's float64 arithmetic
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernels_usable(q: Tensor) -> bool:
    """Whether the fused kernels take ``q`` ``(B, heads, N, head_dim)``: a device they run on, an
    fp32 / fp16 / bf16 dtype, an even head_dim (rotation pairs) of at most 128, and kernels that
    passed :func:`check_kernels` there in q's dtype, the backward too where q will need gradients
    (inside a ``torch.compile`` trace: only if already checked)."""
    if not (kernels_can_run(q) and q.dtype in _KERNEL_DTYPES and q.dim() == 4 and q.shape[-1] % 2 == 0
            and q.shape[-1] <= 128):
        return False
    backward = torch.is_grad_enabled() and q.requires_grad
    if torch.compiler.is_compiling():
        return _passed(q.device, q.dtype, backward) or False
    return check_kernels(q.device, q.dtype, q.shape[-1], backward)


def _passed(device: torch.device, dtype: torch.dtype, backward: bool) -> Optional[bool]:
    """The outcome of the self-check for ``(device, dtype, backward)``; None if it has not run (a passed
    forward-and-backward check stands for the forward alone)."""
    if not backward and _KERNELS_OK.get((device, dtype, True)):
        return True
    return _KERNELS_OK.get((device, dtype, backward))


def check_kernels(device: torch.device,
                  dtype: torch.dtype = torch.float32,
                  head_dim: int = 64,
                  backward: bool = True) -> bool:
    """Run the fused kernels once per device, dtype and ``backward`` on a small problem (the forward, and
    with ``backward`` the backward; channels-last head views, with rotation) against
    :func:`.naive.mala_attention` in float32 on the same inputs. A Triton / driver combination that fails
    to compile them or computes something else gets a warning and the naive backend instead of a crash
    or wrong results.

    The check runs at the caller's dtype and head width, and only the passes the caller runs (inference
    never launches the backward kernels), so the kernels it compiles are the ones the caller's model runs
    next, not extra variants to wait for on a cold kernel cache."""
    device = torch.device(device)
    key = (device, dtype, backward)
    passed = _passed(device, dtype, backward)
    if passed is not None:
        return passed
    reason = ''
    try:
        from .triton import mala_attention_triton  # Triton is optional: imported only on this path
        g = torch.Generator().manual_seed(0)
        heads, n = 2, 99
        x = torch.randn(1, 4 * heads * head_dim, 9, 11, generator=g).to(device, dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        theta = torch.rand(n, head_dim, generator=g).to(device)
        sin, cos = theta.sin(), theta.cos()
        grad = torch.randn(1, heads, n, head_dim, generator=g).to(device, dtype)
        results = []
        with torch.set_grad_enabled(backward), torch.autocast(device.type, enabled=False):
            for fn, fn_dtype in ((mala_attention, torch.float32), (mala_attention_triton, dtype)):
                xx = x.detach().to(fn_dtype).requires_grad_(backward)
                q, k, v = (t.reshape(1, heads, head_dim, n).transpose(-2, -1) for t in xx.chunk(4, dim=1)[:3])
                out = fn(q, k, v, sin, cos, head_dim**-0.5)
                parts = [out.detach().float().flatten()]
                if backward:
                    parts.append(torch.autograd.grad(out, xx, grad.to(out.dtype))[0].float().flatten())
                results.append(torch.cat(parts))
        err = ((results[1] - results[0]).norm() / results[0].norm()).item()
        # fp32 arithmetic inside the kernels either way; half precision rounds the stored outputs
        ok = err < (1e-3 if dtype == torch.float32 else 2e-2)
        reason = f'relative error {err:.1e} against the naive form'
    except Exception as e:  # any failure to compile or launch: fall back, never crash a user's run
        ok = False
        reason = f'{type(e).__name__}: {str(e)[:300]}'
    if not ok:
        passes = 'forward and backward' if backward else 'forward'
        warnings.warn(
            f'MAViT: the Triton MALA kernels ({passes}) failed their self-check on {device} in {dtype} '
            f"({reason}); MALA runs in plain PyTorch there. Set fast_path='off' to silence this, and "
            'please report it with your torch / Triton versions.', RuntimeWarning)
    _KERNELS_OK[key] = ok
    return ok


def mala(q: Tensor,
         k: Tensor,
         v: Tensor,
         sin: Optional[Tensor] = None,
         cos: Optional[Tensor] = None,
         scale: Optional[float] = None,
         backend: str = 'auto') -> Tensor:
    """Magnitude-aware linear attention of every query over all keys.

    Args:
        q, k, v (Tensor): Raw projections ``(B, heads, N, head_dim)`` (any strides: the fused
            kernels read head views of a convolution's output in place).
        sin, cos (Tensor, optional): Rotary tables ``(N, head_dim)``; None for no rotation.
        scale (float, optional): Defaults to ``head_dim ** -0.5``.
        backend (str): One of :data:`BACKENDS`. Defaults to ``'auto'``.

    Returns:
        Tensor: ``(B, heads, N, head_dim)`` in ``v``'s dtype (``'triton'``: in ``q``'s memory order).
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if scale is None:
        scale = q.shape[-1]**-0.5
    if backend == 'triton' and not kernels_can_run(q):
        raise RuntimeError(f"backend='triton' needs Triton and a CUDA tensor (or TRITON_INTERPRET=1 on CPU); "
                           f"got a {q.device.type} tensor with Triton {'' if triton_available() else 'not '}"
                           "installed. Use backend='auto' to fall back to plain PyTorch.")
    if backend == 'triton' or (backend == 'auto' and kernels_usable(q)):
        from .triton import mala_attention_triton
        return mala_attention_triton(q, k, v, sin, cos, scale)
    return mala_attention(q, k, v, sin, cos, scale)


__all__ = [
    'BACKENDS', 'EPS', 'check_kernels', 'kernels_can_run', 'kernels_usable', 'mala', 'mala_attention', 'mala_scores',
    'phi', 'triton_available'
]
