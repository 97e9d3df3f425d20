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
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

FAST_PATH_MODES = ('auto', 'kernels', 'compile', 'off')
# what 'auto' means on CUDA: the fastest mode in docs/benchmarks.md that needs no compile step
AUTO_ON_CUDA = 'kernels'
# graphs per compiled function: train/eval x grad mode x a dynamic re-trace; above dynamo's default 8
_RECOMPILE_LIMIT = 64
_compiled: Dict[Tuple, Callable] = {}


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
    CUDA device with Triton, an even head_dim (rotation pairs) of at most 128."""
    return kernels_can_run(q) and q.dim() == 4 and q.shape[-1] % 2 == 0 and q.shape[-1] <= 128


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
