"""What a training forward keeps alive for backward, module by module.

Peak training memory is mostly the tensors autograd saves between the forward and the backward
pass. :func:`saved_activations` runs one forward under ``torch.autograd.graph.saved_tensors_hooks``
and charges every saved tensor's storage (counted once, however many views of it are saved) to the
innermost module running when it was first saved. The figure is exact and the same on any device
for the same dtypes, so memory work can be measured on a CPU; which dtypes autocast picks differs
between CPU and CUDA.
"""
import collections
import gc
import weakref
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor, nn

PARAMETERS = '(parameters)'


def _pattern(name: str) -> str:
    """``layers.1.blocks.3.ffn.act`` -> ``layers.1.blocks.*.ffn.act``: the innermost index becomes
    ``*``, so the blocks of a stage share a row and the stages keep theirs."""
    parts = name.split('.')
    for i in reversed(range(len(parts))):
        if parts[i].isdigit():
            parts[i] = '*'
            break
    return '.'.join(parts) or '(top level)'


def saved_activations(model: nn.Module,
                      forward: Callable[[], object],
                      group: bool = True) -> Tuple[int, Dict[str, int]]:
    """Bytes saved for backward by one ``forward()`` of ``model``.

    Args:
        model (nn.Module): The module whose submodules the bytes are charged to.
        forward (Callable): Runs the forward (with whatever autocast / inputs) and returns its output.
            The output is dropped before this returns, which frees the saved tensors again.
        group (bool): Merge the repeats of a layer within a stage (``layers.0.blocks.*.attn``);
            else one row per module.

    Returns:
        tuple: ``(total bytes, {module name: bytes})``. Storages of ``model``'s own parameters
        (alive anyway) are reported under ``'(parameters)'`` and left out of the total; per-forward
        copies of them (autocast's casts) count as activations of the module that made them.
    """
    names = {m: n for n, m in model.named_modules()}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stack: List[str] = []
    # storage address -> (module, bytes, weak references to the saved tensors on it): tensors saved
    # and freed again inside the forward (a nested forward/backward) are not counted, and their
    # addresses, once reused, start a new entry
    seen: Dict[int, Tuple[str, int, List[weakref.ref]]] = {}

    def pre(module, args):
        if module in names:
            stack.append(names[module])

    def post(module, args, output):
        if module in names and stack:
            stack.pop()

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        entry = seen.get(key)
        if entry is not None and any(r() is not None for r in entry[2]):
            entry[2].append(weakref.ref(t))
        elif storage.nbytes():
            owner = PARAMETERS if key in params else (stack[-1] if stack else '')
            seen[key] = (owner, storage.nbytes(), [weakref.ref(t)])
        return t

    handles = [
        nn.modules.module.register_module_forward_pre_hook(pre),
        nn.modules.module.register_module_forward_hook(post, always_call=True)
    ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward()
        gc.collect()  # frees what a nested forward/backward left in reference cycles
        alive = [(owner, nbytes) for owner, nbytes, refs in seen.values() if any(r() is not None for r in refs)]
        del out
    finally:
        for h in handles:
            h.remove()
    rows: Dict[str, int] = collections.Counter()
    for owner, nbytes in alive:
        rows[owner if owner == PARAMETERS or not group else _pattern(owner)] += nbytes
    total = sum(v for k, v in rows.items() if k != PARAMETERS)
    return total, dict(sorted(rows.items(), key=lambda kv: -kv[1]))
