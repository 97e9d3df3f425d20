"""BatchShapeBucketPad through mmdet's own DetDataPreprocessor, and what the extra padding does to features."""
import json
import math

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from torch import nn

from mavit_mm.analysis.padding import feature_change, pad_to_multiple
from mavit_mm.engine.shape_buckets import BatchShapeBucketPad, bucket_shape
from mavit_mm.models.backbones.mavit import MAViT
from helpers import TOY_ARCH, call_tool


def test_bucket_shape_rounds_each_side_up():
    assert bucket_shape(800, 1067, 160) == (800, 1120)
    assert bucket_shape(801, 1088, 160) == (960, 1120)
    assert bucket_shape(160, 1, 160) == (160, 160)
    with pytest.raises(ValueError, match='size_divisor must be a positive int'):
        BatchShapeBucketPad(size_divisor=0)


def _sample(h: int, w: int) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[0., 0., 10., 10.]]),
        labels=torch.tensor([1]),
        masks=BitmapMasks(np.ones((1, h, w), dtype=np.uint8), h, w))
    return sample


def test_training_batches_take_the_bucket_shape_and_tests_keep_mmdet_s():
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        pre = MODELS.build(
            dict(
                type='DetDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                pad_size_divisor=32,
                pad_mask=True,
                batch_augments=[dict(type='BatchShapeBucketPad', size_divisor=160, pad_mask=True)]))
    images = [
        torch.randint(0, 256, (3, 800, 1067), dtype=torch.uint8),
        torch.randint(0, 256, (3, 750, 1000), dtype=torch.uint8)
    ]

    def batch():
        return dict(inputs=[i.clone() for i in images], data_samples=[_sample(800, 1067), _sample(750, 1000)])

    out = pre(batch(), training=True)
    assert tuple(out['inputs'].shape) == (2, 3, 800, 1120)
    for s in out['data_samples']:
        assert s.batch_input_shape == (800, 1120) and s.pad_shape == (800, 1120)
        assert s.gt_instances.masks.masks.shape[-2:] == (800, 1120)
    # the padded pixels hold mmdet's padding value (zero, after normalisation) beyond the 32-padding too
    assert out['inputs'][1, :, 750:].abs().max() == 0 and out['inputs'][0, :, :, 1067:].abs().max() == 0
    plain = pre(batch(), training=False)
    assert tuple(plain['inputs'].shape) == (2, 3, 800, 1088)
    torch.testing.assert_close(out['inputs'][..., :1088], plain['inputs'])


class CentreByMean(nn.Module):
    """``x - mean(x)`` over the whole map: every output depends on every input, padded zeros included."""

    def forward(self, x):
        return x - x.mean((2, 3), keepdim=True)


def test_feature_change_over_the_image_region_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 50, 70, generator=g, dtype=torch.float64) + 1
    # padded to 64 x 96 and to 160 x 160: a - b = S / N2 - S / N1 per channel, S the image's sum
    s = image.sum((2, 3), keepdim=True)
    a = image - s / (64 * 96)
    expected = float((s / (160 * 160) - s / (64 * 96)).expand_as(image).norm() / a.norm())
    assert feature_change(CentreByMean(), image, base=32, divisor=160) == pytest.approx([expected], rel=1e-9)
    assert pad_to_multiple(image, 32).shape[-2:] == (64, 96)
    # a 1x1 convolution never reads the padding: no change over the image
    assert feature_change(nn.Conv2d(3, 4, 1).double(), image, base=32, divisor=160) == [0.0]
    assert feature_change(CentreByMean(), image, base=32, divisor=32) == [0.0]


def test_mala_features_move_with_the_padding_at_every_stage():
    """MALA's attention averages over all tokens: coarser padding changes every stage's output over the image,
    where padding to the same multiple changes nothing."""
    torch.manual_seed(0)
    model = MAViT(arch=TOY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0).eval()
    image = torch.randn(1, 3, 100, 140)
    changes = feature_change(model, image, base=32, divisor=160)
    assert len(changes) == 4 and all(c > 1e-4 for c in changes), changes
    assert feature_change(model, image, base=32, divisor=32) == [0.0] * 4
    assert math.isfinite(sum(changes))


def test_padding_effect_cli(tmp_path, capsys):
    out = tmp_path / 'padding.json'
    assert call_tool('tools/analysis_tools/padding_effect.py', '--backbones', 'MAViT-T', '--shape', '100', '140',
                     '--divisors', '160', '--out', str(out)) == 0
    (row, ) = json.loads(out.read_text())['rows']
    assert row['backbone'] == 'MAViT-T' and row['padded'] == [160, 160] and len(row['change']) == 4
    assert all(c > 0 for c in row['change'])
    assert '| MAViT-T | 160x160 (/160) |' in capsys.readouterr().out
