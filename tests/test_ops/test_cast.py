"""The grouped cast of a stage's convolution weights under autocast (``mavit_mm.ops.cast``) against autocast's
own per-convolution casts: the same values and gradients, bit for bit, and far fewer cast ops."""
import copy
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mavit_mm import MAViT
from mavit_mm.ops.cast import grouped_cast
from mavit_mm.ops.mala import interpreting
from helpers import randomize_


class CountOps(TorchDispatchMode):
    """Counts the aten ops that run (forward and backward) inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_grouped_cast_equals_to_and_widens_gradients(dtype):
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 1, 1), (8, ), (5, 1, 3, 3), (5, ), (7, 3)]
    xs = [(torch.randn(s, generator=g) * 300).requires_grad_(True) for s in shapes]
    xs[3].requires_grad_(False)  # a frozen tensor among them gets no gradient
    outs = grouped_cast(xs, dtype)
    for x, o in zip(xs, outs):
        assert o.dtype == dtype and o.shape == x.shape
        assert torch.equal(o, x.detach().to(dtype))
    grads = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    torch.autograd.backward(outs, grads)
    for i, (x, gr) in enumerate(zip(xs, grads)):
        if i == 3:
            assert x.grad is None
        else:
            assert x.grad.dtype == torch.float32 and torch.equal(x.grad, gr.float())


def test_grouped_cast_refuses_mixed_dtypes():
    assert grouped_cast([], torch.float16) == []
    with pytest.raises(ValueError, match='one dtype on one device'):
        grouped_cast([torch.zeros(2), torch.zeros(2, dtype=torch.float64)], torch.float16)


def _train_step(model, x, counter=None):
    """Forward and backward under CPU bf16 autocast; returns the outputs and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    with counter or torch.enable_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        sum((o.float() * (i + 1)).mean() for i, o in enumerate(outs)).backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# recast: the casts the recomputation makes in the backward, outside the stage (5 blocks; the FFN's 3 or the
# block's 7 convolutions, each with a bias)
@pytest.mark.skipif(interpreting(), reason='under the interpreter the fast path runs Triton kernels on the CPU too')
@pytest.mark.parametrize(
    'with_cp, recast', [(False, 0), (['ffn'], 2 * 5 * 3), (True, 2 * 5 * 7)], ids=['keep', 'ffn', 'block'])
def test_backbone_casts_ahead_under_autocast_bit_for_bit(with_cp, recast):
    """A small MAViT under bf16 autocast with the weights cast ahead (fast_path='auto'; on the CPU that is the
    only fast-path change) against fast_path='off' (autocast's own casts): equal outputs and parameter
    gradients, and 2 casts fewer per convolution weight and bias, forward and backward."""
    torch.manual_seed(0)
    arch = dict(embed_dims=[16, 32, 32, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 2])
    ref = randomize_(MAViT(arch=arch, fast_path='off', drop_path_rate=0.0, with_cp=with_cp)).train()
    ahead = copy.deepcopy(ref).set_fast_path('auto')
    x = torch.randn(2, 3, 45, 38)
    counts = []
    results = []
    for model in (ref, ahead):
        counter = CountOps()
        results.append(_train_step(model, x, counter))
        counts.append(counter.counts)
    (outs_ref, grads_ref), (outs, grads) = results
    assert all(torch.equal(a, b) for a, b in zip(outs, outs_ref))
    assert grads.keys() == grads_ref.keys() and len(grads) == len(list(ref.parameters()))
    assert all(torch.equal(grads[k], grads_ref[k]) for k in grads_ref)
    # 5 blocks x 7 convolutions, 3 downsamples and 4 stem convolutions, each with a bias
    tensors = 2 * (5 * 7 + 3 + 4)
    # each weight and bias: a cast forward and one back
    assert counts[0]['_to_copy'] - counts[1]['_to_copy'] == 2 * tensors - recast
    assert counts[1]['_foreach_copy_'] == 2 * (4 + 1)  # one per stage and the stem, each way
