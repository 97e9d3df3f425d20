"""MAViT backbone: every variant against the spec's parameter counts, key layout, shapes and
the release's formulation; the options users set in configs."""
import pytest
import torch
from torch import nn

from mavit_mm import MAViT
from helpers import randomize_
from reference import reference_forward, release_key_layout

ARCHS = {  # arch: (backbone params in M as the release builds them, depths, heads)
    'tiny': (13.35, [2, 2, 6, 2], [1, 2, 4, 8]),
    'small': (24.04, [3, 5, 9, 3], [1, 2, 5, 8]),
    'base': (46.69, [4, 6, 12, 6], [1, 2, 6, 8]),
    'large': (93.56, [4, 7, 19, 8], [1, 2, 7, 10]),
}
DEFAULT_KINDS = ['mala', 'mala', 'softmax', 'softmax']


@pytest.fixture(scope='module')
def models():
    return {arch: MAViT(arch=arch) for arch in ARCHS}


@pytest.mark.parametrize('arch', ARCHS)
def test_param_count_and_release_keys(models, arch):
    model = models[arch]
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params_m, 2) == ARCHS[arch][0]
    assert sorted(model.state_dict()) == sorted(release_key_layout(ARCHS[arch][1]))


@pytest.mark.parametrize('arch', ARCHS)
def test_matches_release_formulation(models, arch):
    """Same weights, same outputs as the release's equations (fp32, CPU, 1e-5 of output scale)."""
    model = randomize_(MAViT(arch=arch)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
        expected = reference_forward(model.state_dict(), x, ARCHS[arch][1], ARCHS[arch][2], DEFAULT_KINDS)
    for got, exp in zip(outs, expected):
        scale = exp.abs().max()
        assert (got - exp).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize('kinds', ['mala', 'softmax', ['softmax', 'mala', 'mala', 'softmax']])
def test_attention_layouts_match_reference(kinds):
    model = randomize_(MAViT(arch='tiny', attn_types=kinds)).eval()
    per_stage = [kinds] * 4 if isinstance(kinds, str) else kinds
    assert all(b.attn_type == per_stage[i] for i, s in enumerate(model.layers) for b in s.blocks)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        for got, exp in zip(model(x), reference_forward(model.state_dict(), x, [2, 2, 6, 2], [1, 2, 4, 8], per_stage)):
            assert (got - exp).abs().max() <= 1e-5 * exp.abs().max()


def test_per_block_attention_types():
    kinds = ['mala', ['mala', 'softmax'], 'softmax', ['softmax', 'mala']]
    model = MAViT(arch='tiny', attn_types=kinds)
    assert [b.attn_type for b in model.layers[1].blocks] == ['mala', 'softmax']
    assert [b.attn_type for b in model.layers[3].blocks] == ['softmax', 'mala']


@pytest.mark.parametrize('arch', ARCHS)
def test_forward_backward_every_param_gets_gradient(models, arch):
    model = models[arch].train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.float().pow(2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize('hw', [(64, 64), (96, 160), (67, 45), (33, 99)])
def test_output_shapes_and_strides(hw):
    model = MAViT(arch='tiny').eval()
    h, w = hw
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    for i, (out, c) in enumerate(zip(outs, [64, 128, 256, 512])):
        h, w = (h + 1) // 2, (w + 1) // 2  # each stride-2 conv: ceil(n / 2)
        if i == 0:
            h, w = (h + 1) // 2, (w + 1) // 2  # the stem has two
        assert out.shape == (1, c, h, w)
        assert out.is_contiguous()  # plain NCHW memory for necks, heads and mmcv ops


@pytest.mark.parametrize('out_indices,expected', [((0, 1, 2, 3), 4), ((3, ), 1), (-1, 1), ((1, 3), 2)])
def test_out_indices(out_indices, expected):
    model = MAViT(arch='tiny', out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == expected
    if out_indices == -1:
        assert outs[0].shape[1] == 512


def test_custom_arch_dict():
    arch = dict(embed_dims=[32, 64, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])
    model = MAViT(arch=arch)
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 64, 64, 128]


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), r"Unknown MAViT arch 'huge': choose one of \['b', 'base'"),
    (dict(arch=dict(embed_dims=[64], depths=[2])), 'missing keys'),
    (dict(out_indices=(0, 4)), 'out_indices entry 4 is out of range'),
    (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\]'),
    (dict(attn_types='flash'), 'Unknown attention type'),
    (dict(attn_types=['mala', 'mala']), 'one entry per stage'),
    (dict(with_cp=['all']),
     r"with_cp must be False, True \(whole blocks\) or a list of parts from \('block', 'ffn', 'stem'\)"),
    (dict(with_cp=('ffn', 'block')), "'block' already recomputes the FFNs"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MAViT(**kwargs)


def test_short_arch_names_are_the_same_model():
    assert MAViT(arch='s').arch_settings == MAViT(arch='Small').arch_settings


def test_frozen_stages():
    model = MAViT(arch='tiny', frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.extra_norms[0], model.extra_norms[1]]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert not m.training
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert model.layers[2].training
    # frozen BN statistics really do not move in training mode
    before = model.patch_embed.proj[1].running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.patch_embed.proj[1].running_mean, before)


@pytest.mark.parametrize('norm_type', ['BN', 'SyncBN'])
def test_norm_eval_covers_syncbn(norm_type):
    model = MAViT(arch='tiny', norm_cfg=dict(type=norm_type), norm_eval=True)
    assert model.train() is model  # train()/eval() return the module
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 7 and not any(m.training for m in bns)
    assert model.layers[0].blocks[0].training
    assert model.eval() is model


def test_syncbn_by_config():
    model = MAViT(arch='tiny', norm_cfg=dict(type='SyncBN'))
    assert isinstance(model.patch_embed.proj[1], nn.SyncBatchNorm)
    assert isinstance(model.layers[0].downsample.norm, nn.SyncBatchNorm)


@pytest.mark.parametrize('with_cp', [True, ['ffn'], ['stem'], ('ffn', 'stem'), ['block', 'stem']])
def test_with_cp_same_values_gradients_and_bn_statistics(with_cp):
    """Recomputation changes nothing: outputs, gradients, and BN running statistics updated once
    per step (the stem's recomputation runs its BNs again; they must not count twice)."""
    torch.manual_seed(0)
    a = MAViT(arch='tiny', drop_path_rate=0.0)
    b = MAViT(arch='tiny', drop_path_rate=0.0, with_cp=with_cp)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 48)
    outs = []
    for m in (a, b):
        for _ in range(2):
            out = m(x)
            sum((o * o.flip(1)).mean() for o in out).backward()
        outs.append(out)
    for oa, ob in zip(*outs):
        torch.testing.assert_close(ob, oa, rtol=0, atol=0)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-6, atol=1e-7, msg=name)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(bb, ba, rtol=0, atol=0, msg=name)
    assert int(b.patch_embed.proj[1].num_batches_tracked) == 2


def test_ffn_recompute_reruns_fc1_gelu_and_the_depthwise_conv_only():
    """The backward of ConvFFN(recompute=True) runs fc1, GELU and the depthwise conv again, not fc2."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mavit_mm.models.layers.block import ConvFFN

    class Ops(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    counts = {}
    for recompute in (False, True):
        ffn = ConvFFN(8, 28, recompute=recompute)
        out = ffn(torch.randn(2, 8, 6, 7, requires_grad=True))
        with Ops() as ops:
            out.sum().backward()
        counts[recompute] = {n: ops.names.count(n) for n in ('convolution.default', 'gelu.default')}
    assert counts[False] == {'convolution.default': 0, 'gelu.default': 0}
    assert counts[True] == {'convolution.default': 2, 'gelu.default': 1}


def test_drop_path_rate_override():
    model = MAViT(arch='tiny', drop_path_rate=0.3)
    assert model.layers[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert isinstance(model.layers[0].blocks[0].drop_path, nn.Identity)
    assert MAViT(arch='base').layers[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.4)


def test_layer_scale_init_values():
    model = MAViT(arch='base')
    assert model.layers[0].blocks[0].gamma_1.flatten()[0].item() == 1.0
    assert model.layers[2].blocks[0].gamma_2.flatten()[0].item() == pytest.approx(1e-6)


def test_with_cp_takes_a_list_of_parts_not_a_string():
    assert MAViT(arch='tiny', with_cp=['ffn']).with_cp == frozenset({'ffn'})
    with pytest.raises(
            ValueError, match=r"a list of parts from \('block', 'ffn', 'stem'\) such as \['ffn', 'stem'\], "
            r"got 'ffn'"):
        MAViT(arch='tiny', with_cp='ffn')


def test_docstring_example_runs():
    import doctest

    import mavit_mm.models.backbones.mavit as module
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
