"""The GPU fast path of MAViT: fused Triton kernels for MALA, channels-last maps, optionally compiled blocks.

Modes (``MAViT(fast_path=...)``), each computing the reference's function:

- ``'off'``: the plain PyTorch reference everywhere (also the CPU path and the tests' oracle).
- ``'kernels'``: on CUDA, MALA runs as the hand-written Triton kernels of :mod:`.mala_triton`
  (forward and backward, fp32 accumulation) and feature maps stay channels-last, so LayerNorm over
  channels and the q/k/v views need no permute copies and 1x1 convolutions run as NHWC GEMMs.
  Softmax stages use SDPA's flash kernel (as the reference). Nothing is compiled: no warm-up cost.
- ``'compile'``: ``'kernels'`` plus every block through ``torch.compile``: Inductor fuses the
  remaining elementwise chains (LayerNorm, GELU, rotary of the softmax stages, layer scales,
  residual adds); the MALA kernels stay one opaque custom op. Compiling takes minutes the first
  time. On CPU this compiles the reference (Inductor's C++ backend; used by the tests).
- ``'auto'`` (default): :data:`AUTO_ON_CUDA` on CUDA tensors when Triton is installed, else ``'off'``.

Compiled blocks: one graph per kind of block (width, heads, attention type) and mode; on CUDA the
image size is marked dynamic, so multi-scale training does not recompile per size.
"""
import types
import warnings
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

FAST_PATH_MODES = ('auto', 'kernels', 'compile', 'off')
# what 'auto' means on CUDA: the fastest mode in docs/benchmarks.md that needs no compile step
AUTO_ON_CUDA = 'kernels'
# graphs per compiled function: train/eval x grad mode x a dynamic re-trace; above dynamo's default 8
_RECOMPILE_LIMIT = 64
_compiled: Dict[Tuple, Callable] = {}
# per device: did the Triton MALA kernels pass their self-check (see check_mala_kernels)
_KERNELS_OK: Dict[torch.device, bool] = {}


def _block_forward(block: nn.Module, x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    return block(x, (sin, cos))


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False


def kernels_can_run(x: Tensor) -> bool:
    """Whether Triton kernels can run on ``x``'s device (a CUDA GPU with Triton installed). The
    tests replace this to run the kernels on CPU through Triton's interpreter."""
    return x.is_cuda and triton_available()


def resolve_fast_path(mode: str, x: Tensor) -> str:
    """What ``mode`` (one of :data:`FAST_PATH_MODES`) does for input ``x``: ``'off'``, ``'kernels'``
    or ``'compile'``. Inside a ``torch.compile`` of a larger model the blocks are not compiled again
    (the outer graph fuses them); the kernels still apply."""
    if mode not in FAST_PATH_MODES:
        raise ValueError(f'fast_path must be one of {FAST_PATH_MODES}, got {mode!r}')
    gpu = kernels_can_run(x)
    if mode == 'off' or (mode in ('auto', 'kernels') and not gpu):
        return 'off'
    if torch.compiler.is_compiling():
        return 'kernels' if gpu else 'off'
    return AUTO_ON_CUDA if mode == 'auto' else mode


def mala_kernels_usable(q: Tensor) -> bool:
    """Whether the Triton MALA kernels can run on ``q`` ``(B, heads, N, head_dim)``: a tensor on a
    CUDA device with Triton, an even head_dim (rotation pairs) of at most 128, and kernels that passed
    :func:`check_mala_kernels` on this device (inside a torch.compile trace: only if already checked)."""
    if not (kernels_can_run(q) and q.dim() == 4 and q.shape[-1] % 2 == 0 and q.shape[-1] <= 128):
        return False
    if torch.compiler.is_compiling():
        return _KERNELS_OK.get(q.device, False)
    return check_mala_kernels(q.device)


def check_mala_kernels(device: torch.device) -> bool:
    """Run the Triton MALA kernels once per device on a small problem (forward and backward, fp32,
    channels-last, with rotation) against the PyTorch reference. A Triton / driver combination that
    fails to compile them or computes something else gets a warning and the reference path instead
    of a crash or wrong results."""
    if device in _KERNELS_OK:
        return _KERNELS_OK[device]
    from .mala import mala_attention
    from .rotary import RotaryEmbedding2d
    reason = ''
    try:
        from . import mala_triton
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4 * 64, 9, 11, generator=g).to(device).contiguous(memory_format=torch.channels_last)
        sin, cos = (t.to(device) for t in RotaryEmbedding2d(64, 1)((9, 11)))
        grad = torch.randn(1, 1, 99, 64, generator=g).to(device)
        results = []
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            for fn in (mala_attention, mala_triton.mala_attention_triton):
                xx = x.detach().requires_grad_(True)
                q, k, v = (t.reshape(1, 1, 64, 99).transpose(-2, -1) for t in xx.chunk(4, dim=1)[:3])
                out = fn(q, k, v, sin, cos, 0.125)
                results.append(torch.cat([out.detach().flatten(), torch.autograd.grad(out, xx, grad)[0].flatten()]))
        err = ((results[1] - results[0]).norm() / results[0].norm()).item()
        ok = err < 1e-3
        reason = f'relative error {err:.1e} against the reference'
    except Exception as e:  # any failure to compile or launch: fall back, never crash a user's run
        ok = False
        reason = f'{type(e).__name__}: {str(e)[:300]}'
    if not ok:
        warnings.warn(f'MAViT: the Triton MALA kernels failed their self-check on {device} ({reason}); '
                      "MALA runs the PyTorch reference there. Set fast_path='off' to silence this, and "
                      'please report it with your torch / Triton versions.', RuntimeWarning)
    _KERNELS_OK[device] = ok
    return ok


def compiled_block_forward(block: nn.Module, device_type: str) -> Callable[..., Tensor]:
    """The compiled ``block(x, (sin, cos))`` for blocks of this width, heads and attention type.

    Dynamo keeps its cache and its "this size changed, make it dynamic" memory per code object, so
    each kind of block gets a code object of its own: channel counts stay static (well-tuned
    kernels), only the image size is dynamic. On CPU (tests) shapes stay static: Inductor's C++
    backend fails on the symbolic sizes in torch 2.14.
    """
    key = (block.attn.embed_dims, block.attn.num_heads, block.attn_type, device_type)
    if key not in _compiled:
        import torch._dynamo.config as dynamo_config
        limit = 'recompile_limit' if hasattr(dynamo_config, 'recompile_limit') else 'cache_size_limit'
        setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), _RECOMPILE_LIMIT))
        name = 'mavit_block_{}x{}_{}_{}'.format(*key)
        code = _block_forward.__code__.replace(co_name=name)
        fn = types.FunctionType(code, _block_forward.__globals__, name)
        _compiled[key] = torch.compile(fn, dynamic=False if device_type == 'cpu' else None)
    return _compiled[key]


def run_block_compiled(block: nn.Module, x: Tensor, rope: Tuple[Tensor, Tensor]) -> Tensor:
    """``block(x, rope)`` through its compiled graph; on CUDA the spatial size is marked dynamic."""
    sin, cos = rope
    if x.is_cuda:
        for t, dims in ((x, (2, 3)), (sin, (0, )), (cos, (0, ))):
            for d in dims:
                torch._dynamo.maybe_mark_dynamic(t, d)
    return compiled_block_forward(block, x.device.type)(block, x, sin, cos)
