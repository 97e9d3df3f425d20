"""Neck and head convolutions in size buckets (mavit_mm.engine.conv_buckets): which convolutions switch,
that the checkpoint keys stay, and that an mmdet FPN computes the same values and gradients (float64)."""
import copy
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger
from torch import nn

from mavit_mm.engine.conv_buckets import ConvSizeBucketsHook, SizeBucketConv2d, use_conv_size_buckets
from mavit_mm.ops import conv as conv_ops
from helpers import rel_err

CUDA = torch.cuda.is_available()


class _Detector(nn.Module):
    """An mmdet FPN as the neck, a head with convolutions the buckets do not take, and an RoI head."""

    def __init__(self) -> None:
        super().__init__()
        from mmdet.models.necks import FPN
        self.neck = FPN(in_channels=[4, 8], out_channels=6, num_outs=4, add_extra_convs='on_input')
        self.bbox_head = nn.Sequential(
            nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=2, dilation=2),
            nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 6, 3, padding='same'))
        self.roi_head = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1))


def test_only_plain_convolutions_of_the_named_children_switch_and_keys_stay():
    model = _Detector()
    keys = list(model.state_dict())
    switched = use_conv_size_buckets(model)
    # FPN: 2 lateral 1x1, 2 output 3x3, 2 extra stride-2 3x3 (P5 from C5, P6 from P5)
    assert sorted(n for n in switched if n.startswith('neck.')) == [
        'neck.fpn_convs.0.conv', 'neck.fpn_convs.1.conv', 'neck.fpn_convs.2.conv', 'neck.fpn_convs.3.conv',
        'neck.lateral_convs.0.conv', 'neck.lateral_convs.1.conv'
    ]
    assert [n for n in switched if not n.startswith('neck.')] == ['bbox_head.0']  # not dilated, grouped, 'same'
    assert type(model.roi_head[0]) is nn.Conv2d
    assert list(model.state_dict()) == keys


def test_fpn_in_size_buckets_matches_the_plain_fpn_with_gradients(monkeypatch):
    torch.manual_seed(0)
    plain = _Detector().double()
    bucketed = copy.deepcopy(plain)
    use_conv_size_buckets(bucketed)
    seen = []
    conv2d = conv_ops.F.conv2d
    monkeypatch.setattr(conv_ops.F, 'conv2d', lambda x, *a, **k: seen.append(tuple(x.shape[-2:])) or conv2d(x, *a, **k))
    feats = [torch.randn(2, 4, 37, 53, dtype=torch.float64), torch.randn(2, 8, 19, 27, dtype=torch.float64)]
    outs = []
    for model in (plain, bucketed):
        inputs = [f.clone().requires_grad_(True) for f in feats]
        out = model.neck(inputs)
        sum((o * torch.cos(torch.arange(o.numel(), dtype=o.dtype).view_as(o))).sum() for o in out).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        outs.append((out, [i.grad for i in inputs], grads))
    (out_p, gin_p, gw_p), (out_b, gin_b, gw_b) = outs
    assert [o.shape for o in out_b] == [o.shape for o in out_p]
    assert max(rel_err(b, p) for b, p in zip(out_b, out_p)) < 1e-12
    assert max(rel_err(b, p) for b, p in zip(gin_b, gin_p)) < 1e-12
    assert gw_b.keys() == gw_p.keys() and max(rel_err(gw_b[k], gw_p[k]) for k in gw_p) < 1e-12
    assert (40, 56) in seen and (24, 32) in seen  # cuDNN would see bucket sizes, not 37 x 53 and 19 x 27


def test_maps_under_one_bucket_step_keep_their_size(monkeypatch):
    """An UperNet's pooled maps (1x1 - 6x6) are not padded to 8x8; an 8 x 9 map is (to 8 x 16)."""
    conv = nn.Conv2d(4, 4, 1)
    use_conv_size_buckets(nn.ModuleDict(dict(decode_head=conv)))
    seen = []
    conv2d = conv_ops.F.conv2d
    monkeypatch.setattr(conv_ops.F, 'conv2d', lambda x, *a, **k: seen.append(tuple(x.shape[-2:])) or conv2d(x, *a, **k))
    assert [tuple(conv(torch.randn(1, 4, s, s + 1)).shape[-2:]) for s in (1, 6, 8)] == [(1, 2), (6, 7), (8, 9)]
    assert seen == [(1, 2), (6, 7), (8, 16)]


def test_hook_leaves_a_model_on_the_cpu_alone():
    model = _Detector()
    ConvSizeBucketsHook().before_run(SimpleNamespace(model=model, logger=MMLogger.get_current_instance()))
    assert not any(isinstance(m, SizeBucketConv2d) for m in model.modules())


@pytest.mark.skipif(not CUDA, reason='the hook acts on CUDA models')
def test_hook_switches_the_named_children_of_a_cuda_model():
    model = _Detector().cuda()
    ConvSizeBucketsHook(children=['neck']).before_run(
        SimpleNamespace(model=model, logger=MMLogger.get_current_instance()))
    assert sum(isinstance(m, SizeBucketConv2d) for m in model.modules()) == 6
    assert type(model.bbox_head[0]) is nn.Conv2d
    feats = [torch.randn(2, 4, 37, 53, device='cuda'), torch.randn(2, 8, 19, 27, device='cuda')]
    assert [tuple(o.shape[-2:]) for o in model.neck(feats)] == [(37, 53), (19, 27), (10, 14), (5, 7)]
