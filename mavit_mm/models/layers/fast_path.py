"""The GPU fast path: each MAViT block compiled by TorchInductor into fused Triton kernels.

The plain PyTorch block is the reference (and the CPU path). On CUDA the same Python code is
traced by ``torch.compile``: LayerNorm with its two permutes, the ELU / rotary / magnitude-aware
arithmetic of MALA around its two small matmuls, GELU, layer scales and residual adds become a
few fused Triton kernels, forward and backward (AOTAutograd), while convolutions stay cuDNN and
softmax stages stay on SDPA's flash / memory-efficient kernels. Nothing is re-derived by hand, so
the fast path computes exactly the reference's math; only the order of floating-point operations
changes.

The image size is marked dynamic on CUDA, so one compiled graph per kind of block (width, heads,
attention type) and train/eval serves every resolution: multi-scale training does not recompile
per image size.
"""
import types
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

FAST_PATH_MODES = ('auto', 'compile', 'off')
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


def fast_path_enabled(mode: str, x: Tensor) -> bool:
    """Whether to run the compiled block for input ``x`` under ``mode`` (see :data:`FAST_PATH_MODES`).

    ``'auto'``: on CUDA tensors when Triton is installed and we are not already inside a
    ``torch.compile`` of a larger model (which then fuses the blocks itself).
    """
    if mode == 'off' or torch.compiler.is_compiling():
        return False
    if mode == 'compile':
        return True
    return x.is_cuda and triton_available()


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


def run_block_fast(block: nn.Module, x: Tensor, rope: Tuple[Tensor, Tensor]) -> Tensor:
    """``block(x, rope)`` through its compiled graph; on CUDA the spatial size is marked dynamic."""
    sin, cos = rope
    if x.is_cuda:
        for t, dims in ((x, (2, 3)), (sin, (0, )), (cos, (0, ))):
            for d in dims:
                torch._dynamo.maybe_mark_dynamic(t, d)
    return compiled_block_forward(block, x.device.type)(block, x, sin, cos)
