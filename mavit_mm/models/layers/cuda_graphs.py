"""Inference replayed from captured CUDA graphs: the fix for launch-bound small batches.

At batch 1 a MAViT-T forward is ~hundreds of small kernels; at 512x2048 the GPU finishes them
faster than Python and the dispatcher can launch them (docs/benchmarks.md has the profile). A CUDA
graph records the launches once per input shape and replays them with one call.

Use for fixed-size inference (mmseg's sliding-window crops, a fixed test scale); every new input
shape costs a capture and keeps its graph (the least recently used of ``max_graphs`` is dropped).
"""
import weakref
from collections import OrderedDict
from typing import Callable, Hashable, Tuple

import torch
from torch import Tensor, nn

# graphs per module, outside the module so that deepcopy / pickling of a model never meets them
_CACHES: 'weakref.WeakKeyDictionary[nn.Module, OrderedDict]' = weakref.WeakKeyDictionary()
_POOLS: 'weakref.WeakKeyDictionary[nn.Module, object]' = weakref.WeakKeyDictionary()


def graphs_applicable(module: nn.Module, x: Tensor) -> bool:
    """Eval mode, no autograd, a CUDA input, outside torch.compile and any other capture."""
    return (x.is_cuda and not module.training and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.cuda.is_current_stream_capturing())


def _key(module: nn.Module, x: Tensor) -> Hashable:
    amp = torch.is_autocast_enabled('cuda')
    return (tuple(x.shape), x.stride(), x.dtype, x.device, amp,
            torch.get_autocast_dtype('cuda') if amp else None,
            # the graph reads the weights at fixed addresses: a moved / replaced parameter invalidates it
            tuple(t.data_ptr() for t in module.parameters()), tuple(t.data_ptr() for t in module.buffers()))


def run_graphed(module: nn.Module, fn: Callable[[Tensor], Tuple[Tensor, ...]], x: Tensor,
                max_graphs: int = 8) -> Tuple[Tensor, ...]:
    """``fn(x)`` (a no-grad forward of ``module``) replayed from a CUDA graph captured for x's
    shape, dtype and autocast state. Outputs are fresh tensors (copies of the graph's buffers)."""
    cache = _CACHES.setdefault(module, OrderedDict())
    key = _key(module, x)
    entry = cache.get(key)
    if entry is None:
        static_x = x.clone()
        amp = torch.is_autocast_enabled('cuda')
        amp_dtype = torch.get_autocast_dtype('cuda')
        # warm up on a side stream (lazy inits, cuDNN / Triton autotuning), as torch.cuda.graphs asks
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        pool = _POOLS.setdefault(module, torch.cuda.graph_pool_handle())
        # autocast's cast cache would keep tensors from inside the capture alive past it
        with torch.cuda.graph(graph, pool=pool), \
                torch.autocast('cuda', dtype=amp_dtype, enabled=amp, cache_enabled=False):
            static_out = fn(static_x)
        entry = cache[key] = (graph, static_x, static_out)
        while len(cache) > max_graphs:
            cache.popitem(last=False)
    cache.move_to_end(key)
    graph, static_x, static_out = entry
    static_x.copy_(x)
    graph.replay()
    # copies: the graphs share one memory pool, and the next replay rewrites these buffers
    return tuple(o.clone() for o in static_out)


def clear_graphs(module: nn.Module) -> None:
    """Drop the module's captured graphs (and with them their memory)."""
    _CACHES.pop(module, None)
    _POOLS.pop(module, None)
