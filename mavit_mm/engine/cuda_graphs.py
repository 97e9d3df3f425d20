"""CUDA-graph replay of a module's forward (and its backward): the fix for launch-bound steps.

At batch 1 a MAViT-T forward is hundreds of small kernels, and a training step at 2 x 800x1344
about a thousand; the GPU finishes them faster than Python and the dispatcher can launch them. A
CUDA graph records the launches once per input shape and replays them with one call. Nothing here is
MAViT-specific: any module whose forward takes one tensor and returns a tensor or a tuple of tensors
(a backbone, say) can be graphed.

- :func:`enable_cuda_graphs` ``(module, mode)`` installs a :class:`GraphedForward` as that module
  instance's ``forward``; :class:`CUDAGraphHook` does it from a config
  (``custom_hooks = [dict(type='CUDAGraphHook', module='backbone', mode='eval')]``).
  :func:`disable_cuda_graphs` removes it, and with it every graph, memory pool and watch it holds.
- ``mode='eval'`` (:class:`EvalGraphs`): no-grad eval forwards; every new input shape costs a capture
  and keeps its graph (the least recently used of ``max_graphs`` is dropped).
- ``mode='train'`` (:class:`TrainGraphs`): the forward and its backward as two graphs per input shape,
  replayed by one autograd function, once a shape is seen a second time (``capture_after=0``: the first).
  Gradients reach ``.grad`` as usual, BN running statistics and DropPath draw anew on every replay, and a
  run draws the DropPath masks its eager twin with the same seed draws (the capture's warm-up runs give
  back the draws they took). What it needs: the input shapes repeat (fixed-size crops); no SyncBN (collectives are not
  captured) and no recomputation that re-seeds random ops in the backward (MAViT's ``with_cp=True``); one
  backward per forward before the next forward of the same module (a second forward while a backward is
  pending runs eagerly, with a warning).
- ``mode='all'``: both.

Against ``torch.cuda.make_graphed_callables`` (which captures one callable for one fixed sample input),
this adds what a Runner's loop needs:

- graphs made on demand per input key (shape, strides, dtype, autocast state and the addresses of the
  weights, so that ``model.to`` or a replaced parameter re-captures instead of reading freed memory);
- gradients handed to autograd as copies: its backward returns the graph's own buffers, which autograd
  keeps as ``.grad``, so the next replay rewrote accumulated gradients
  (``tests/test_engine/test_cuda_graphs.py::test_graph_gradient_buffers_must_not_become_grad``);
- capture through aliases of the parameters (:func:`_parameters_replaced_by_aliases`): it captures through
  the parameters' own gradient accumulators, which fails when the previous step's autograd graph or DDP's
  reducer still holds them;
- BN running statistics and the CUDA random generator put back after the warm-up runs, and an eager
  fallback wherever a graph cannot be replayed (CPU, ``torch.compile``, SyncBN, a second forward before the backward).

State: each :class:`GraphedForward` owns its graphs, memory pools and :class:`_StateIndex`. The index
caches a flat list of the module's tensors and learns of new registrations through torch's global
module-registration hooks, which :class:`_RegistrationWatch` installs while at least one graphed forward
exists and removes with the last one (on :func:`disable_cuda_graphs`, or when the module is freed).
"""
import contextlib
import warnings
import weakref
from collections import OrderedDict
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn
from torch.nn.modules import module as module_api

CUDA_GRAPHS_MODES = ('eval', 'train', 'all')

#: A forward as the graphs see it: one tensor in, a tuple of tensors out.
Forward = Callable[[Tensor], Tuple[Tensor, ...]]


# ------------------------------------------------------------------------------ what a graph reads
class _RegistrationWatch:
    """A counter that moves whenever any module registers or assigns a parameter, buffer or submodule.

    It counts through torch's process-wide registration hooks, installed by the first :meth:`acquire` and
    removed by the last :meth:`release`: they exist only while some module is graphed.
    """

    def __init__(self) -> None:
        self.version = 0
        self._users = 0
        self._handles: List[object] = []

    @property
    def active(self) -> bool:
        return self._users > 0

    def _bump(self, *args) -> None:
        self.version += 1

    def acquire(self) -> None:
        if self._users == 0:
            self._handles = [
                module_api.register_module_parameter_registration_hook(self._bump),
                module_api.register_module_buffer_registration_hook(self._bump),
                module_api.register_module_module_registration_hook(self._bump),
            ]
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            for handle in self._handles:
                handle.remove()
            self._handles = []


_WATCH = _RegistrationWatch()


class _StateIndex:
    """Weak references to a module's submodules, parameters and buffers, in one flat list each, so that
    the cache key before every replay reads addresses without walking the module tree.
    (``module.parameters()``, ``buffers()`` and ``modules()`` walk it with generators and de-duplication:
    0.4 ms for MAViT-T on a 2-core CPU, in which the GPU idles after each replay; the lists: 0.03 ms.)

    The lists are rebuilt after any registration (while :data:`_WATCH` is active; without it, on every
    call) and when a tensor they knew has been freed (replaced in a module's dict directly, as
    ``module.to`` does with buffers). Built lazily: a deep copy indexes the copy once it is complete.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = weakref.ref(module)
        self._version: Optional[int] = None
        self.modules: List['weakref.ref[nn.Module]'] = []
        self.params: List['weakref.ref[Tensor]'] = []
        self.buffers: List['weakref.ref[Tensor]'] = []

    def _build(self) -> None:
        self.modules, self.params, self.buffers = [], [], []
        stack = [self._module()]
        while stack:
            mod = stack.pop()
            self.modules.append(weakref.ref(mod))
            self.params += [weakref.ref(p) for p in mod._parameters.values() if p is not None]
            self.buffers += [weakref.ref(b) for b in mod._buffers.values() if b is not None]
            stack.extend(m for m in mod._modules.values() if m is not None)
        self._version = _WATCH.version if _WATCH.active else None

    def _refresh(self, fresh: bool) -> None:
        if fresh or self._version is None or self._version != _WATCH.version:
            self._build()

    def live_modules(self) -> Iterator[nn.Module]:
        """The module and all its submodules, as they are now."""
        self._refresh(False)
        return (r() for r in self.modules if r() is not None)

    def state_key(self, training: bool = False, fresh: bool = False) -> Tuple:
        """The addresses of the module's parameters and buffers (a graph reads them at fixed addresses: a
        moved or replaced tensor invalidates it) and, with ``training``, every parameter's ``requires_grad``
        and every submodule's ``training`` flag."""
        self._refresh(fresh)
        try:
            out = [r().data_ptr() for r in self.params]
            out += [r().data_ptr() for r in self.buffers]
            if training:
                out += [r().requires_grad for r in self.params]
                out += [r().training for r in self.modules]
        except AttributeError:  # a dead reference: that tensor or module was replaced
            if fresh:
                raise
            return self.state_key(training, fresh=True)
        return tuple(out)

    def key(self, x: Tensor, training: bool = False, fresh: bool = False) -> Hashable:
        """What a graph for input ``x`` depends on: its shape, strides, dtype and device, the autocast state,
        :meth:`state_key`, and in training whether ``x`` needs a gradient. Callers look a key up again with
        ``fresh=True`` before capturing a new graph."""
        amp = torch.is_autocast_enabled('cuda')
        key = (tuple(x.shape), x.stride(), x.dtype, x.device, amp, torch.get_autocast_dtype('cuda') if amp else None,
               self.state_key(training, fresh))
        return (key, x.requires_grad) if training else key


def _replayable(x: Tensor) -> bool:
    """A CUDA input, outside torch.compile and any other capture."""
    return x.is_cuda and not torch.compiler.is_compiling() and not torch.cuda.is_current_stream_capturing()


def _autocast_like_now() -> contextlib.AbstractContextManager:
    """The current CUDA autocast state without its cast cache, which would keep tensors from inside a
    capture alive past it."""
    amp = torch.is_autocast_enabled('cuda')
    return torch.autocast('cuda', dtype=torch.get_autocast_dtype('cuda'), enabled=amp, cache_enabled=False)


# ---------------------------------------------------------------------------------------- inference
class EvalGraphs:
    """No-grad eval forwards replayed from one CUDA graph per input key, the least recently used of
    ``max_graphs`` dropped. Outputs are fresh tensors (copies of the graph's buffers)."""

    def __init__(self, max_graphs: int = 8) -> None:
        self.max_graphs = max_graphs
        self.cache: 'OrderedDict[Hashable, Tuple[torch.cuda.CUDAGraph, Tensor, Tuple[Tensor, ...]]]' = OrderedDict()
        self.pool: Optional[Tuple[int, int]] = None

    @staticmethod
    def applicable(module: nn.Module, x: Tensor) -> bool:
        """Eval mode and no autograd, on a CUDA input outside any compile or capture."""
        return _replayable(x) and not module.training and not torch.is_grad_enabled()

    def __call__(self, index: _StateIndex, fn: Forward, x: Tensor) -> Tuple[Tensor, ...]:
        key = index.key(x)
        entry = self.cache.get(key)
        if entry is None:  # a new shape, or a tensor moved in a way the index missed: look again, walking
            key = index.key(x, fresh=True)
            entry = self.cache.get(key)
        if entry is None:
            entry = self.cache[key] = self._capture(fn, x)
            while len(self.cache) > self.max_graphs:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        graph, static_x, static_out = entry
        static_x.copy_(x)
        graph.replay()
        # copies (one multi-tensor launch): the graphs share one memory pool, and the next replay rewrites
        # these buffers
        outs = [torch.empty_like(o) for o in static_out]
        torch._foreach_copy_(outs, static_out)
        return tuple(outs)

    def _capture(self, fn: Forward, x: Tensor) -> Tuple[torch.cuda.CUDAGraph, Tensor, Tuple[Tensor, ...]]:
        static_x = x.clone()
        # warm up on a side stream (lazy inits, cuDNN / Triton autotuning), as torch.cuda.graphs asks
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool), _autocast_like_now():
            static_out = fn(static_x)
        return graph, static_x, static_out


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

    def param_grads(self) -> Tuple[Optional[Tensor], ...]:
        return self.static_grads[len(self.static_grads) - len(self.params):]


class _Token:
    """One forward replay; ``done`` once its backward has replayed."""
    done = False


@contextlib.contextmanager
def _parameters_replaced_by_aliases(module: nn.Module) -> Iterator[Tuple[nn.Parameter, ...]]:
    """Swap every trainable parameter for a new leaf on the same memory while capturing. The graphs
    then read the real weights, but autograd meets fresh gradient accumulators: the parameters' own
    were made on the default stream (and DDP keeps them), and a capture that waits on the default
    stream is invalidated. (``torch.func.functional_call`` swaps them for one call only; the aliases
    must stay through the backward's capture, where checkpointed parts run again.) Written to
    ``_parameters`` directly, as ``functional_call`` does, so that no registration hook fires."""
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


#: Training graphs are captured only while at least this share of the GPU's memory is free (unused by
#: tensors): each input shape's graphs keep their static inputs, outputs and gradients.
MIN_FREE_SHARE = 0.25


def _memory_to_spare(device: torch.device) -> bool:
    """Whether at least :data:`MIN_FREE_SHARE` of ``device``'s memory is free, counting what torch's caching
    allocator holds without a tensor in it."""
    free, total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free >= MIN_FREE_SHARE * total


class TrainGraphs:
    """Training forwards and their backwards replayed from two CUDA graphs per input key, captured once a
    key has run ``capture_after`` steps eagerly (by default: when it is seen a second time, so that a shape
    that comes once takes no graph), up to ``max_graphs`` keys and while :func:`_memory_to_spare`; the rest
    run eagerly. One memory pool serves every key: their replays never overlap, as a forward waits for the
    previous backward."""

    def __init__(self, max_graphs: int = 8, capture_after: int = 1) -> None:
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self.entries: Dict[Hashable, _Entry] = {}
        self.seen: Dict[Hashable, int] = {}
        self.pool: Optional[Tuple[int, int]] = None
        self.pending: Optional['weakref.ref[_Token]'] = None
        self.replays = 0
        self.disabled = ''
        self.warned = False
        self.memory_full = False

    @staticmethod
    def applicable(module: nn.Module, index: _StateIndex, x: Tensor) -> bool:
        """Training mode with autograd on, a CUDA input outside any compile or capture, no SyncBatchNorm
        (mmengine turns it into BN when training is not distributed)."""
        return (_replayable(x) and module.training and torch.is_grad_enabled()
                and not any(isinstance(m, nn.SyncBatchNorm) for m in index.live_modules()))

    def backward_pending(self) -> bool:
        token = self.pending() if self.pending is not None else None
        return token is not None and not token.done

    def __call__(self, module: nn.Module, index: _StateIndex, fn: Forward, x: Tensor) -> Tuple[Tensor, ...]:
        if self.disabled or not (x.requires_grad or any(p.requires_grad for p in module.parameters())):
            return fn(x)
        if self.backward_pending():
            if not self.warned:
                self.warned = True
                warnings.warn(
                    "CUDA graphs mode 'train': a second forward before the backward of the first; "
                    'such forwards run eagerly (the graphs hold one set of saved activations).', RuntimeWarning)
            return fn(x)
        key = index.key(x, training=True)
        entry = self.entries.get(key)
        if entry is None:
            key = index.key(x, training=True, fresh=True)
            entry = self.entries.get(key)
        if entry is None:
            if len(self.seen) > 4096:  # many shapes (multi-scale training): count afresh
                self.seen.clear()
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] <= self.capture_after or len(self.entries) >= self.max_graphs or self.memory_full:
                return fn(x)
            if not _memory_to_spare(x.device):
                self.memory_full = True
                print_log(
                    f"CUDA graphs mode 'train': less than {MIN_FREE_SHARE:.0%} of the GPU's memory is free; "
                    f'no graphs beyond the {len(self.entries)} captured, other input shapes run eagerly',
                    logger='current')
                return fn(x)
            try:
                entry = self.entries[key] = self._capture(module, fn, x)
                if len(self.entries) == self.max_graphs:
                    print_log(
                        f"CUDA graphs mode 'train': {self.max_graphs} input shapes have graphs (max_graphs); "
                        'the training steps of other shapes run eagerly',
                        logger='current')
            except Exception as e:
                # not recoverable in this process (a failed capture leaves CUDA's RNG unusable): say what to do
                self.disabled = f'{type(e).__name__}: {str(e)[:300]}'
                raise RuntimeError(f"CUDA graphs mode 'train' could not capture the training step of "
                                   f'{type(module).__name__} for input {tuple(x.shape)}: {self.disabled}. Train '
                                   "without it (or with mode 'eval'), and please report it with your torch "
                                   'version.') from e
        token = _Token()
        self.pending = weakref.ref(token)
        return _GraphedStep.apply(entry, self, token, x, *entry.params)

    def release_grads(self) -> None:
        """Give every ``.grad`` that is still a graph's gradient buffer (autograd keeps a returned gradient
        as ``.grad`` itself) a memory of its own before a replay rewrites that buffer: the common step
        (``zero_grad(set_to_none=True)`` before the next backward) copies nothing, accumulation stays right."""
        for entry in self.entries.values():
            for p, g in zip(entry.params, entry.param_grads()):
                if g is not None and p.grad is not None and p.grad.data_ptr() == g.data_ptr():
                    p.grad = p.grad.clone()

    def _capture(self, module: nn.Module, fn: Forward, x: Tensor) -> _Entry:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        params = tuple(p for p in module.parameters() if p.requires_grad)
        entry = _Entry(x.detach().clone().requires_grad_(x.requires_grad), params)
        autocast = _autocast_like_now()
        # warm-up and capture run the forward in training mode: put the BN statistics back afterwards, and
        # the CUDA generator too, so that the replay draws what the eager step would have drawn
        saved_buffers = [b.clone() for b in module.buffers()]
        saved_rng = torch.cuda.get_rng_state(x.device)
        try:
            with _parameters_replaced_by_aliases(module) as aliases:
                inputs = ((entry.static_x, ) if x.requires_grad else ()) + aliases

                def forward() -> Tuple[Tensor, ...]:
                    with autocast:
                        return tuple(fn(entry.static_x))

                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # lazy inits, cuDNN / Triton autotuning, tile choice: not in graphs
                    for _ in range(2):
                        out = [o for o in forward() if o.requires_grad]
                        if not out:
                            raise ValueError('no output of the forward requires grad: nothing to train')
                        torch.autograd.grad(out, inputs, [torch.ones_like(o) for o in out], allow_unused=True)
                    del out
                torch.cuda.current_stream().wait_stream(side)
                with torch.cuda.graph(entry.fwd, pool=self.pool):
                    entry.static_out = forward()
                entry.out_requires_grad = tuple(o.requires_grad for o in entry.static_out)
                trained = [o for o in entry.static_out if o.requires_grad]
                entry.static_grad_out = tuple(torch.empty_like(o) for o in trained)
                with torch.cuda.graph(entry.bwd, pool=self.pool):
                    entry.static_grads = tuple(
                        torch.autograd.grad(trained, inputs, entry.static_grad_out, allow_unused=True))
        finally:
            with torch.no_grad():
                for b, saved in zip(module.buffers(), saved_buffers):
                    b.copy_(saved)
            torch.cuda.set_rng_state(saved_rng, x.device)
        return entry


class _GraphedStep(torch.autograd.Function):
    """A forward and its backward replayed from an :class:`_Entry`'s graphs."""

    @staticmethod
    def forward(ctx, entry: _Entry, graphs: TrainGraphs, token: _Token, x: Tensor, *params:
                Tensor) -> Tuple[Tensor, ...]:
        graphs.release_grads()
        entry.static_x.copy_(x)
        entry.fwd.replay()
        graphs.replays += 1
        ctx.entry, ctx.graphs, ctx.token, ctx.replay = entry, graphs, token, graphs.replays
        # copies: the outputs must outlive the next replay, which rewrites the graph's buffers
        outs = tuple(o.clone() for o in entry.static_out)
        ctx.mark_non_differentiable(*(o for o, r in zip(outs, entry.out_requires_grad) if not r))
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor) -> Tuple[Optional[Tensor], ...]:
        entry, graphs = ctx.entry, ctx.graphs
        if graphs.replays != ctx.replay:
            raise RuntimeError("CUDA graphs mode 'train': this backward belongs to a forward whose saved "
                               'activations a later replay has overwritten (a second backward through a '
                               "retained graph?). Use mode 'eval' (or no graphs) for such training loops.")
        graphs.release_grads()
        for static, grad in zip(entry.static_grad_out, (g for g, r in zip(grads, entry.out_requires_grad) if r)):
            static.copy_(grad)
        entry.bwd.replay()
        ctx.token.done = True
        grads_in = [g.detach() if g is not None else None for g in entry.static_grads]
        grad_x = grads_in.pop(0).clone() if entry.static_x.requires_grad else None
        return (None, None, None, grad_x, *grads_in)


# ------------------------------------------------------------------------------- switching it on
class GraphedForward:
    """The ``forward`` :func:`enable_cuda_graphs` installs on one module instance: CUDA graphs where they
    apply (:class:`EvalGraphs`, :class:`TrainGraphs`), the class's forward elsewhere (CPU, the other mode,
    several inputs or keyword arguments).

    It owns all its state and holds the module weakly; :meth:`close` (called by
    :func:`disable_cuda_graphs`) or the module's end frees the graphs and releases :data:`_WATCH`. A deep
    copy or pickle of the module gets a fresh one for the copy, with no graphs.
    """

    def __init__(self, module: nn.Module, mode: str, max_graphs: int = 8, capture_after: int = 1) -> None:
        self._module = weakref.ref(module)
        self.mode = mode
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self.index = _StateIndex(module)
        self.eval_graphs = EvalGraphs(max_graphs) if mode in ('eval', 'all') else None
        self.train_graphs = TrainGraphs(max_graphs, capture_after) if mode in ('train', 'all') else None
        self.single_output = False  # the forward returns a tensor, not a tuple (known once it has run)
        _WATCH.acquire()
        self._release = weakref.finalize(self, _WATCH.release)

    @property
    def module(self) -> Optional[nn.Module]:
        return self._module()

    def close(self) -> None:
        """Drop the graphs (and with them their memory) and release the registration watch."""
        self.eval_graphs = self.train_graphs = None
        self._release()

    def __reduce__(self):
        return GraphedForward, (self._module(), self.mode, self.max_graphs, self.capture_after)

    def __call__(self, *args, **kwargs):
        module = self._module()
        forward = type(module).forward.__get__(module)
        if kwargs or len(args) != 1 or not isinstance(args[0], Tensor):
            return forward(*args, **kwargs)
        x = args[0]

        def as_tuple(t: Tensor) -> Tuple[Tensor, ...]:
            out = forward(t)
            self.single_output = isinstance(out, Tensor)
            return (out, ) if self.single_output else tuple(out)

        if self.eval_graphs is not None and EvalGraphs.applicable(module, x):
            out = self.eval_graphs(self.index, as_tuple, x)
        elif self.train_graphs is not None and TrainGraphs.applicable(module, self.index, x):
            out = self.train_graphs(module, self.index, as_tuple, x)
        else:
            return forward(x)
        return out[0] if self.single_output else out


def _check_max_graphs(value: object, who: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{who} max_graphs must be a positive int (the input shapes given graphs), got {value!r}')


def _check_capture_after(value: object, who: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'{who} capture_after must be an int >= 0 (the eager steps of a new input shape before '
                         f'its training graphs are captured: 1 captures at its second step, 0 at its first), '
                         f'got {value!r}')


def enable_cuda_graphs(module: nn.Module, mode: str = 'eval', max_graphs: int = 8, capture_after: int = 1) -> nn.Module:
    """Replay ``module``'s forward from CUDA graphs (see the module docstring for ``mode``), keeping graphs
    for at most ``max_graphs`` input shapes per mode (each shape's graphs keep their static inputs, outputs
    and, in training, gradients: about 70 MB a shape for MAViT-T in a COCO-sized detector run, docs/speed.md).
    In training a new input shape runs ``capture_after`` steps eagerly before its graphs are captured (the
    capture's own warm-up steps come on top).

    The module keeps its parameters, state dict and class; only this instance's ``forward`` changes.
    A module may define ``check_cuda_graphs(mode)`` to refuse a mode it cannot be captured in (MAViT
    does for ``with_cp=True`` in training). Returns ``module``.
    """
    if mode not in CUDA_GRAPHS_MODES:
        raise ValueError(f'cuda graphs mode must be one of {CUDA_GRAPHS_MODES}, got {mode!r}')
    _check_max_graphs(max_graphs, 'cuda graphs')
    _check_capture_after(capture_after, 'cuda graphs')
    check = getattr(module, 'check_cuda_graphs', None)
    if callable(check):
        check(mode)
    disable_cuda_graphs(module)
    module.forward = GraphedForward(module, mode, max_graphs, capture_after)
    return module


def disable_cuda_graphs(module: nn.Module) -> nn.Module:
    """Undo :func:`enable_cuda_graphs`: the class's forward again, captured graphs dropped."""
    forward = module.__dict__.get('forward')
    if isinstance(forward, GraphedForward):
        del module.__dict__['forward']
        forward.close()
    return module


def graphed_forward(module: nn.Module) -> Optional[GraphedForward]:
    """The :class:`GraphedForward` :func:`enable_cuda_graphs` installed on ``module``, or None."""
    forward = module.__dict__.get('forward')
    return forward if isinstance(forward, GraphedForward) else None


def cuda_graphs_mode(module: nn.Module) -> Optional[str]:
    """The mode :func:`enable_cuda_graphs` set on ``module``, or None."""
    forward = graphed_forward(module)
    return forward.mode if forward is not None else None


def graph_pool_bytes(module: nn.Module) -> Tuple[int, int]:
    """``(reserved, allocated)`` bytes of the memory pools of ``module``'s graphs (inference and
    training). A pool keeps what its captures used: ``reserved - allocated`` is memory that
    ``torch.cuda.max_memory_allocated`` does not count, yet no other tensor can use."""
    forward = graphed_forward(module)
    graphs = [forward.eval_graphs, forward.train_graphs] if forward is not None else []
    pools = [tuple(g.pool) for g in graphs if g is not None and g.pool is not None]
    reserved = allocated = 0
    for seg in torch.cuda.memory_snapshot() if pools else []:
        if tuple(seg.get('segment_pool_id', ())) in pools:
            reserved += seg['total_size']
            allocated += seg['allocated_size']
    return reserved, allocated


@HOOKS.register_module()
class CUDAGraphHook(Hook):
    """Replay one submodule of the Runner's model from CUDA graphs (:func:`enable_cuda_graphs`), and
    switch them off again when the run ends.

    Args:
        module (str): Dotted path of the submodule in the model (``''`` for the model itself, which
            mmengine calls with a dict of inputs: that falls back to the plain forward). Defaults to
            ``'backbone'``.
        mode (str): ``'eval'``, ``'train'`` or ``'all'``. Defaults to ``'eval'`` (fixed-size test
            inputs, e.g. a segmentor's sliding-window crops).
        max_graphs (int): Input shapes with graphs, per mode: in ``'eval'`` the least recently used
            shape's graph makes way for a new one, in ``'train'`` further shapes run eagerly. Defaults to 8
            (fixed-size crops need one).
        capture_after (int): In ``'train'``, the steps a new input shape runs eagerly before its graphs
            are captured. Defaults to 1: a shape's second step is captured, so shapes that come once take
            no graph; 0 captures at the first step, so that a shape costs one slow step instead of two
            (in a COCO-shaped Mask R-CNN run that step took 0.81 s against 0.51 + 0.39 s, and the run was
            no faster: a flatter p90 only; docs/speed.md).
    """

    priority = 'LOW'

    def __init__(self,
                 module: str = 'backbone',
                 mode: str = 'eval',
                 max_graphs: int = 8,
                 capture_after: int = 1) -> None:
        if mode not in CUDA_GRAPHS_MODES:
            raise ValueError(f'CUDAGraphHook: mode must be one of {CUDA_GRAPHS_MODES}, got {mode!r}')
        _check_max_graphs(max_graphs, 'CUDAGraphHook:')
        _check_capture_after(capture_after, 'CUDAGraphHook:')
        self.module = module
        self.mode = mode
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self._target: Optional['weakref.ref[nn.Module]'] = None

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            target = model.get_submodule(self.module) if self.module else model
        except AttributeError as e:
            raise ValueError(f'CUDAGraphHook: the model ({type(model).__name__}) has no submodule '
                             f'{self.module!r}; set module= to one of its children, e.g. '
                             f'{[n for n, _ in model.named_children()]}') from e
        enable_cuda_graphs(target, self.mode, self.max_graphs, self.capture_after)
        self._target = weakref.ref(target)

    def after_run(self, runner) -> None:
        target = self._target() if self._target is not None else None
        if target is not None:
            disable_cuda_graphs(target)
        self._target = None
