"""CUDA-graph replay of a module's forward (and its backward): the fix for launch-bound steps.

At batch 1 a MAViT-T forward is hundreds of small kernels, and a training step at 2 x 800x1344
about a thousand; the GPU finishes them faster than Python and the dispatcher can launch them. A
CUDA graph records the launches once per input shape and replays them with one call. Nothing here is
MAViT-specific: any module whose forward takes one tensor and returns a tensor or a tuple of tensors
(a backbone, say) can be graphed.

- :func:`enable_cuda_graphs` ``(module, mode)`` switches it on for one module; :class:`CUDAGraphHook`
  does that from a config (``custom_hooks = [dict(type='CUDAGraphHook', module='backbone')]``).
- ``mode='eval'`` (:func:`run_graphed`): no-grad eval forwards; every new input shape costs a capture
  and keeps its graph (the least recently used of ``max_graphs`` is dropped).
- ``mode='train'`` (:func:`run_graphed_train`): the forward and its backward as two graphs per input
  shape, replayed by one autograd function. Gradients reach ``.grad`` as usual (gradient accumulation
  and ``zero_grad(set_to_none=False)`` work: see :func:`_release_grads`), BN running statistics and
  DropPath draw anew on every replay. What it needs: the input shapes repeat (fixed-size crops); no
  SyncBN (collectives are not captured) and no recomputation that re-seeds random ops in the backward
  (MAViT's ``with_cp=True``); one backward per forward before the next forward of the same module (a
  second forward while a backward is pending runs eagerly, with a warning).
- ``mode='all'``: both.

``torch.cuda.make_graphed_callables`` is not used for training: its backward hands autograd the
graph's own gradient buffers, which ``.grad`` then aliases, so the next replay overwrites
accumulated gradients (``tests/test_engine/test_cuda_graphs.py``), and it captures through the
parameters' own gradient accumulators, which fails when the previous step's autograd graph (or DDP)
still holds them.
"""
import contextlib
import functools
import warnings
import weakref
from collections import OrderedDict
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

CUDA_GRAPHS_MODES = ('eval', 'train', 'all')

# graphs per module, outside the module so that deepcopy / pickling of a model never meets them
_CACHES: 'weakref.WeakKeyDictionary[nn.Module, OrderedDict]' = weakref.WeakKeyDictionary()
_POOLS: 'weakref.WeakKeyDictionary[nn.Module, object]' = weakref.WeakKeyDictionary()


def graphs_applicable(module: nn.Module, x: Tensor) -> bool:
    """Eval mode, no autograd, a CUDA input, outside torch.compile and any other capture."""
    return (x.is_cuda and not module.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing())


# bumped whenever any module registers or assigns a parameter, buffer or submodule (torch's global
# registration hooks, installed with the first index): the indexes below are then rebuilt
_REGISTRATIONS = [0]
_WATCHING: List[object] = []


def _registered(*args) -> None:
    _REGISTRATIONS[0] += 1


class _StateIndex:
    """Weak references to a module's submodules, parameters and buffers, in one flat list each, so that
    the cache key before every replay reads addresses without walking the module tree.
    (``module.parameters()``, ``buffers()`` and ``modules()`` walk it with generators and de-duplication:
    0.4 ms for MAViT-T on a 2-core CPU, in which the GPU idles after each replay; the lists: 0.03 ms.)"""

    def __init__(self, module: nn.Module) -> None:
        if not _WATCHING:
            _WATCHING.extend([
                torch.nn.modules.module.register_module_parameter_registration_hook(_registered),
                torch.nn.modules.module.register_module_buffer_registration_hook(_registered),
                torch.nn.modules.module.register_module_module_registration_hook(_registered)
            ])
        self.version = _REGISTRATIONS[0]
        self.modules: List['weakref.ref[nn.Module]'] = []
        self.params: List['weakref.ref[Tensor]'] = []
        self.buffers: List['weakref.ref[Tensor]'] = []
        stack = [module]
        while stack:
            mod = stack.pop()
            self.modules.append(weakref.ref(mod))
            self.params += [weakref.ref(p) for p in mod._parameters.values() if p is not None]
            self.buffers += [weakref.ref(b) for b in mod._buffers.values() if b is not None]
            stack.extend(m for m in mod._modules.values() if m is not None)


_INDEXES: 'weakref.WeakKeyDictionary[nn.Module, _StateIndex]' = weakref.WeakKeyDictionary()


def _state_index(module: nn.Module, fresh: bool = False) -> _StateIndex:
    """``module``'s :class:`_StateIndex`, built anew with ``fresh`` or after any registration."""
    index = _INDEXES.get(module)
    if fresh or index is None or index.version != _REGISTRATIONS[0]:
        index = _INDEXES[module] = _StateIndex(module)
    return index


def _state_key(module: nn.Module, training: bool = False, fresh: bool = False) -> Tuple[int, ...]:
    """The addresses of ``module``'s parameters and buffers (a graph reads them at fixed addresses: a
    moved or replaced tensor invalidates it) and, with ``training``, every parameter's ``requires_grad``
    and every submodule's ``training`` flag.

    From the module's :class:`_StateIndex`, rebuilt with ``fresh``, after any registration, or when a
    tensor it knew has been freed (replaced in a module's dict directly, as ``module.to`` does with
    buffers). Callers look a key up again with ``fresh=True`` before capturing a new graph."""
    index = _state_index(module, fresh)
    try:
        out = [r().data_ptr() for r in index.params]
        out += [r().data_ptr() for r in index.buffers]
        if training:
            out += [r().requires_grad for r in index.params]
            out += [r().training for r in index.modules]
    except AttributeError:  # a dead reference: that tensor or module was replaced
        if fresh:
            raise
        return _state_key(module, training, fresh=True)
    return tuple(out)


def _key(module: nn.Module, x: Tensor, training: bool = False, fresh: bool = False) -> Hashable:
    amp = torch.is_autocast_enabled('cuda')
    return (tuple(x.shape), x.stride(), x.dtype, x.device, amp, torch.get_autocast_dtype('cuda') if amp else None,
            _state_key(module, training, fresh))


def run_graphed(module: nn.Module,
                fn: Callable[[Tensor], Tuple[Tensor, ...]],
                x: Tensor,
                max_graphs: int = 8) -> Tuple[Tensor, ...]:
    """``fn(x)`` (a no-grad forward of ``module``) replayed from a CUDA graph captured for x's
    shape, dtype and autocast state. Outputs are fresh tensors (copies of the graph's buffers)."""
    cache = _CACHES.setdefault(module, OrderedDict())
    key = _key(module, x)
    entry = cache.get(key)
    if entry is None:  # a new shape, or a tensor moved in a way the index missed: look again, walking
        key = _key(module, x, fresh=True)
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
    # copies (one multi-tensor launch): the graphs share one memory pool, and the next replay rewrites
    # these buffers
    outs = [torch.empty_like(o) for o in static_out]
    torch._foreach_copy_(outs, static_out)
    return tuple(outs)


def clear_graphs(module: nn.Module) -> None:
    """Drop the module's captured graphs, inference and training (and with them their memory)."""
    _CACHES.pop(module, None)
    _POOLS.pop(module, None)
    _TRAIN.pop(module, None)


# ---------------------------------------------------------------------------------------- training
class _Entry:
    """The two graphs of one input shape and the static tensors they read and write."""

    def __init__(self, static_x: Tensor, params: Tuple[nn.Parameter, ...]) -> None:
        self.static_x = static_x
        self.params = params
        self.fwd = torch.cuda.CUDAGraph()
        self.bwd = torch.cuda.CUDAGraph()
        self.static_out: Tuple[Tensor, ...] = ()
        # which outputs autograd reaches (a frozen first stage's map does not): only those have a backward
        self.out_requires_grad: Tuple[bool, ...] = ()
        self.static_grad_out: Tuple[Tensor, ...] = ()  # one per output that requires grad
        self.static_grads: Tuple[Optional[Tensor], ...] = ()  # x (if it needs one), then params


class _Token:
    """One forward replay; ``done`` once its backward has replayed."""
    done = False


class _TrainState:
    """A module's training graphs: one memory pool for all shapes (their replays never overlap:
    a forward waits for the previous backward), the shapes seen so far, the pending forward."""

    def __init__(self) -> None:
        self.entries: Dict[Hashable, _Entry] = {}
        self.seen: Dict[Hashable, int] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.pending: Optional['weakref.ref[_Token]'] = None
        self.replays = 0
        self.disabled = ''
        self.warned = False

    def backward_pending(self) -> bool:
        token = self.pending() if self.pending is not None else None
        return token is not None and not token.done


_TRAIN: 'weakref.WeakKeyDictionary[nn.Module, _TrainState]' = weakref.WeakKeyDictionary()


def train_graphs_applicable(module: nn.Module, x: Tensor) -> bool:
    """Training mode with autograd on, a CUDA input, outside torch.compile and any other capture,
    no SyncBatchNorm (mmengine turns it into BN when training is not distributed)."""
    return (x.is_cuda and module.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing()
            and not any(isinstance(r(), nn.SyncBatchNorm) for r in _state_index(module).modules))


def _train_key(module: nn.Module, x: Tensor, fresh: bool = False) -> Hashable:
    return _key(module, x, training=True, fresh=fresh), x.requires_grad


def _release_grads(state: '_TrainState') -> None:
    """Give every ``.grad`` that is still a graph's gradient buffer (autograd keeps a returned gradient
    as ``.grad`` itself) a memory of its own before a replay rewrites that buffer: the common step
    (``zero_grad(set_to_none=True)`` before the next backward) copies nothing, accumulation stays right."""
    for entry in state.entries.values():
        for p, g in zip(entry.params, entry.static_grads[len(entry.static_grads) - len(entry.params):]):
            if g is not None and p.grad is not None and p.grad.data_ptr() == g.data_ptr():
                p.grad = p.grad.clone()


class _GraphedStep(torch.autograd.Function):
    """``fn(x)`` and its backward replayed from an :class:`_Entry`'s graphs."""

    @staticmethod
    def forward(ctx, entry: _Entry, state: _TrainState, token: _Token, x: Tensor, *params:
                Tensor) -> Tuple[Tensor, ...]:
        _release_grads(state)
        entry.static_x.copy_(x)
        entry.fwd.replay()
        state.replays += 1
        ctx.entry, ctx.state, ctx.token, ctx.replay = entry, state, token, state.replays
        # copies: the outputs must outlive the next replay, which rewrites the graph's buffers
        outs = tuple(o.clone() for o in entry.static_out)
        ctx.mark_non_differentiable(*(o for o, r in zip(outs, entry.out_requires_grad) if not r))
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor) -> Tuple[Optional[Tensor], ...]:
        entry, state = ctx.entry, ctx.state
        if state.replays != ctx.replay:
            raise RuntimeError('cuda_graphs=\'train\': this backward belongs to a forward whose saved '
                               'activations a later replay has overwritten (a second backward through a '
                               "retained graph?). Use mode='eval' (or no graphs) for such training loops.")
        _release_grads(state)
        for static, grad in zip(entry.static_grad_out, (g for g, r in zip(grads, entry.out_requires_grad) if r)):
            static.copy_(grad)
        entry.bwd.replay()
        ctx.token.done = True
        grads_in = [g.detach() if g is not None else None for g in entry.static_grads]
        grad_x = grads_in.pop(0).clone() if entry.static_x.requires_grad else None
        return (None, None, None, grad_x, *grads_in)


@contextlib.contextmanager
def _parameters_replaced_by_aliases(module: nn.Module) -> Iterator[Tuple[nn.Parameter, ...]]:
    """Swap every trainable parameter for a new leaf on the same memory while capturing. The graphs
    then read the real weights, but autograd meets fresh gradient accumulators: the parameters' own
    were made on the default stream (and DDP keeps them), and a capture that waits on the default
    stream is invalidated. (``torch.func.functional_call`` swaps them for one call only; the aliases
    must stay through the backward's capture, where checkpointed parts run again.)"""
    swapped: List[Tuple[nn.Module, str, nn.Parameter]] = []
    aliases = {}
    try:
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.requires_grad:
                    if p not in aliases:
                        aliases[p] = nn.Parameter(p.detach(), requires_grad=True)
                    swapped.append((mod, name, p))
                    mod._parameters[name] = aliases[p]
        yield tuple(aliases.values())
    finally:
        for mod, name, p in swapped:
            mod._parameters[name] = p


def _capture(module: nn.Module, fn: Callable[[Tensor], Tuple[Tensor, ...]], x: Tensor, pool: object) -> _Entry:
    params = tuple(p for p in module.parameters() if p.requires_grad)
    entry = _Entry(x.detach().clone().requires_grad_(x.requires_grad), params)
    amp = torch.is_autocast_enabled('cuda')
    amp_dtype = torch.get_autocast_dtype('cuda')
    # warm-up and capture run the forward in training mode: put the BN statistics back afterwards
    saved_buffers = [b.clone() for b in module.buffers()]
    try:
        with _parameters_replaced_by_aliases(module) as aliases:
            inputs = ((entry.static_x, ) if x.requires_grad else ()) + aliases

            def forward() -> Tuple[Tensor, ...]:
                with torch.autocast('cuda', dtype=amp_dtype, enabled=amp, cache_enabled=False):
                    return tuple(fn(entry.static_x))

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # lazy inits, cuDNN / Triton autotuning, tile choice: not in the graphs
                for _ in range(2):
                    out = [o for o in forward() if o.requires_grad]
                    if not out:
                        raise ValueError('no output of the forward requires grad: nothing to train')
                    torch.autograd.grad(out, inputs, [torch.ones_like(o) for o in out], allow_unused=True)
                del out
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(entry.fwd, pool=pool):
                entry.static_out = forward()
            entry.out_requires_grad = tuple(o.requires_grad for o in entry.static_out)
            trained = [o for o in entry.static_out if o.requires_grad]
            entry.static_grad_out = tuple(torch.empty_like(o) for o in trained)
            with torch.cuda.graph(entry.bwd, pool=pool):
                entry.static_grads = tuple(
                    torch.autograd.grad(trained, inputs, entry.static_grad_out, allow_unused=True))
    finally:
        with torch.no_grad():
            for b, saved in zip(module.buffers(), saved_buffers):
                b.copy_(saved)
    return entry


def run_graphed_train(module: nn.Module,
                      fn: Callable[[Tensor], Tuple[Tensor, ...]],
                      x: Tensor,
                      max_graphs: int = 8) -> Tuple[Tensor, ...]:
    """``fn(x)`` (a training forward of ``module``) and its backward replayed from CUDA graphs
    captured for x's shape, dtype and autocast state, once that shape is seen a second time; up to
    ``max_graphs`` shapes, the rest eagerly. Outputs and gradients are fresh tensors."""
    state = _TRAIN.get(module)
    if state is None:
        state = _TRAIN[module] = _TrainState()
    params_need_grad = any(p.requires_grad for p in module.parameters())
    if state.disabled or not (params_need_grad or x.requires_grad):
        return fn(x)
    if state.backward_pending():
        if not state.warned:
            state.warned = True
            warnings.warn(
                "CUDA graphs mode 'train': a second forward before the backward of the first; "
                'such forwards run eagerly (the graphs hold one set of saved activations).', RuntimeWarning)
        return fn(x)
    key = _train_key(module, x)
    entry = state.entries.get(key)
    if entry is None:
        key = _train_key(module, x, fresh=True)
        entry = state.entries.get(key)
    if entry is None:
        if len(state.seen) > 4096:  # many shapes (multi-scale training): count afresh
            state.seen.clear()
        state.seen[key] = state.seen.get(key, 0) + 1
        if state.seen[key] < 2 or len(state.entries) >= max_graphs:
            return fn(x)
        try:
            entry = state.entries[key] = _capture(module, fn, x, state.pool)
        except Exception as e:
            # not recoverable in this process (a failed capture leaves CUDA's RNG unusable): say what to do
            state.disabled = f'{type(e).__name__}: {str(e)[:300]}'
            raise RuntimeError(f"CUDA graphs mode 'train' could not capture the training step of "
                               f'{type(module).__name__} for input {tuple(x.shape)}: {state.disabled}. Train '
                               "without it (or with mode='eval'), and please report it with your torch "
                               'version.') from e
    token = _Token()
    state.pending = weakref.ref(token)
    return _GraphedStep.apply(entry, state, token, x, *entry.params)


def graph_pool_bytes(module: nn.Module) -> Tuple[int, int]:
    """``(reserved, allocated)`` bytes of the memory pools of ``module``'s graphs (inference and
    training). A pool keeps what its captures used: ``reserved - allocated`` is memory that
    ``torch.cuda.max_memory_allocated`` does not count, yet no other tensor can use."""
    pools = [p for p in (_POOLS.get(module), getattr(_TRAIN.get(module), 'pool', None)) if p is not None]
    reserved = allocated = 0
    for seg in torch.cuda.memory_snapshot() if pools else []:
        if tuple(seg.get('segment_pool_id', ())) in [tuple(p) for p in pools]:
            reserved += seg['total_size']
            allocated += seg['allocated_size']
    return reserved, allocated


# ------------------------------------------------------------------------------- switching it on
def _graphed_forward(module: nn.Module, mode: str, *args, **kwargs):
    """``module.forward`` with CUDA graphs where they apply, the plain forward elsewhere (CPU, other
    modes, several inputs). Installed per instance by :func:`enable_cuda_graphs`."""
    forward = functools.partial(type(module).forward, module)
    if kwargs or len(args) != 1 or not isinstance(args[0], Tensor):
        return forward(*args, **kwargs)
    x = args[0]
    single = []

    def as_tuple(t: Tensor) -> Tuple[Tensor, ...]:
        out = forward(t)
        single[:] = [isinstance(out, Tensor)]
        return (out, ) if single[0] else tuple(out)

    if mode in ('eval', 'all') and graphs_applicable(module, x):
        out = run_graphed(module, as_tuple, x)
    elif mode in ('train', 'all') and train_graphs_applicable(module, x):
        out = run_graphed_train(module, as_tuple, x)
    else:
        return forward(x)
    if not single:  # replayed without a call of as_tuple: its output kind was recorded at capture
        single = [getattr(module, '_cuda_graphs_single_output', False)]
    module.__dict__['_cuda_graphs_single_output'] = single[0]
    return out[0] if single[0] else out


def enable_cuda_graphs(module: nn.Module, mode: str = 'eval') -> nn.Module:
    """Replay ``module``'s forward from CUDA graphs (see the module docstring for ``mode``).

    The module keeps its parameters, state dict and class; only this instance's ``forward`` changes.
    A module may define ``check_cuda_graphs(mode)`` to refuse a mode it cannot be captured in (MAViT
    does for ``with_cp=True`` in training). Returns ``module``.
    """
    if mode not in CUDA_GRAPHS_MODES:
        raise ValueError(f'cuda graphs mode must be one of {CUDA_GRAPHS_MODES}, got {mode!r}')
    check = getattr(module, 'check_cuda_graphs', None)
    if callable(check):
        check(mode)
    clear_graphs(module)
    module.forward = functools.partial(_graphed_forward, module, mode)
    return module


def disable_cuda_graphs(module: nn.Module) -> nn.Module:
    """Undo :func:`enable_cuda_graphs`: the class's forward again, captured graphs dropped."""
    module.__dict__.pop('forward', None)
    module.__dict__.pop('_cuda_graphs_single_output', None)
    clear_graphs(module)
    return module


def cuda_graphs_mode(module: nn.Module) -> Optional[str]:
    """The mode :func:`enable_cuda_graphs` set on ``module``, or None."""
    forward = module.__dict__.get('forward')
    if isinstance(forward, functools.partial) and forward.func is _graphed_forward:
        return forward.args[1]
    return None


@HOOKS.register_module()
class CUDAGraphHook(Hook):
    """Replay one submodule of the Runner's model from CUDA graphs (:func:`enable_cuda_graphs`).

    Args:
        module (str): Dotted path of the submodule in the model (``''`` for the model itself, which
            mmengine calls with a dict of inputs: that falls back to the plain forward). Defaults to
            ``'backbone'``.
        mode (str): ``'eval'``, ``'train'`` or ``'all'``. Defaults to ``'eval'`` (fixed-size test
            inputs, e.g. a segmentor's sliding-window crops).
    """

    priority = 'LOW'

    def __init__(self, module: str = 'backbone', mode: str = 'eval') -> None:
        if mode not in CUDA_GRAPHS_MODES:
            raise ValueError(f'CUDAGraphHook: mode must be one of {CUDA_GRAPHS_MODES}, got {mode!r}')
        self.module = module
        self.mode = mode

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            target = model.get_submodule(self.module) if self.module else model
        except AttributeError as e:
            raise ValueError(f'CUDAGraphHook: the model ({type(model).__name__}) has no submodule '
                             f'{self.module!r}; set module= to one of its children, e.g. '
                             f'{[n for n, _ in model.named_children()]}') from e
        enable_cuda_graphs(target, self.mode)
