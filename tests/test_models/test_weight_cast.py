"""Each block's convolution weights cast together under autocast, against autocast's own casts.

Runs on CPU (its autocast casts convolution weights to bf16 as CUDA's does): the values and gradients must
be bit-identical to plain autocast, and the casts must really be merged (counted at the dispatcher).
"""
import collections
import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mavit_mm import MAViT
from mavit_mm.models.layers.weight_cast import autocast_weight_dtype, weights_cast_together
from mavit_mm.ops.mala import interpreting
from helpers import randomize_


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def convs_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(8, 16, 1), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 8, 1, bias=False))


def forward_backward(net: nn.Module, x: torch.Tensor, together: bool):
    net.zero_grad()
    with torch.autocast('cpu', torch.bfloat16):
        if together:
            with weights_cast_together(list(net), x):
                y = net(x)
        else:
            y = net(x)
    y.float().square().sum().backward()
    return y, {n: p.grad for n, p in net.named_parameters()}


def test_cast_together_equals_autocast_to_the_bit():
    net = convs_net()
    params = {n: p for n, p in net.named_parameters()}
    x = torch.randn(2, 8, 9, 7)
    y_ref, g_ref = forward_backward(net, x, together=False)
    with OpCounter() as ops:
        y, g = forward_backward(net, x, together=True)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    for name, grad in g.items():
        assert grad.dtype == torch.float32 and torch.equal(grad, g_ref[name]), name
    # one multi-tensor cast each way; autocast's per-weight casts (_to_copy) of the 5 tensors gone:
    # what is left casts the input and the output's fp32 loss
    assert ops.counts['_foreach_copy_'] == 2
    with OpCounter() as ref_ops:
        forward_backward(net, x, together=False)
    assert ref_ops.counts['_to_copy'] - ops.counts['_to_copy'] == 2 * 5
    # the modules hold their own Parameters again
    assert all(p is params[n] and isinstance(p, nn.Parameter) for n, p in net.named_parameters())


def test_cast_together_restores_parameters_on_error_and_skips_where_it_cannot_help():
    net = convs_net()
    weight = net[0].weight
    with pytest.raises(RuntimeError, match='boom'):
        with torch.autocast('cpu', torch.bfloat16), weights_cast_together(list(net), torch.zeros(1)):
            assert net[0].weight.dtype == torch.bfloat16 and not isinstance(net[0].weight, nn.Parameter)
            raise RuntimeError('boom')
    assert net[0].weight is weight
    x = torch.zeros(1)
    assert autocast_weight_dtype(x) is None  # autocast off
    with torch.autocast('cpu', torch.bfloat16):
        assert autocast_weight_dtype(x) == torch.bfloat16
    # fp64 weights: autocast would not cast them to bf16 the same way; left alone
    net.double()
    with torch.autocast('cpu', torch.bfloat16), OpCounter() as ops, weights_cast_together(list(net), x):
        assert net[0].weight.dtype == torch.float64
    assert ops.counts['_foreach_copy_'] == 0


def test_frozen_weights_get_no_gradient():
    net = convs_net()
    net[0].requires_grad_(False)
    x = torch.randn(1, 8, 5, 5)
    y_ref, g_ref = forward_backward(net, x, together=False)
    y, g = forward_backward(net, x, together=True)
    assert torch.equal(y, y_ref)
    assert g['0.weight'] is None and g['0.bias'] is None
    assert torch.equal(g['2.weight'], g_ref['2.weight'])


@pytest.mark.skipif(interpreting(), reason="under TRITON_INTERPRET=1 'auto' also runs the Triton kernels on CPU")
@pytest.mark.parametrize('with_cp', [False, ['ffn', 'stem'], True], ids=['keep', 'ffn-stem', 'block'])
def test_backbone_fast_path_casts_each_blocks_weights_once(with_cp):
    """MAViT's 'auto' under CPU bf16 autocast (no Triton kernels on CPU: only the merged casts differ
    from 'off'): bit-identical outputs and parameter gradients, with and without recomputation, and two
    multi-tensor casts per block in place of 2 x 14 single ones."""
    arch = dict(embed_dims=[32, 64, 64, 64], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 2])
    ref = randomize_(MAViT(arch=arch, fast_path='off', drop_path_rate=0.0, with_cp=with_cp)).train()
    fast = copy.deepcopy(ref).set_fast_path('auto')
    x = torch.randn(2, 3, 64, 96)
    results = []
    for model in (ref, fast):
        with OpCounter() as ops:
            with torch.autocast('cpu', torch.bfloat16):
                outs = model(x)
            sum(o.float().square().mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}, ops.counts))
    (outs_ref, g_ref, ops_ref), (outs, g, ops) = results
    assert all(torch.equal(a, b) for a, b in zip(outs_ref, outs))
    assert all(torch.equal(g_ref[n], g[n]) for n in g_ref)
    blocks = 5
    # block recomputation runs each block's forward (and its cast) once more in the backward
    runs = 2 if with_cp is True else 1
    assert ops_ref['_foreach_copy_'] == 0 and ops['_foreach_copy_'] == blocks * (runs + 1)
    assert ops_ref['_to_copy'] - ops['_to_copy'] == blocks * 14 * (runs + 1)
