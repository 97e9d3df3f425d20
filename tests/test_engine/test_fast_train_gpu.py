"""``--fast-train``'s parts that only a GPU exercises, against the stock components on the same GPU:
fused AdamW under ``AmpOptimWrapper``'s GradScaler, the device sampler's draws, pinned non-blocking mask
copies and mmcv's CUDA RoIAlign in the device mask targets. Skipped without CUDA."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import build_optim_wrapper
from torch import nn

import mavit_mm.engine  # noqa: F401  (registers GroupedOptimWrapperConstructor)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        # the ReLU gives conv.bias a real gradient: straight into BN it would be ~0, and Adam would
        # normalise the rounding noise of two backward passes into full-size, different updates
        return self.head(self.norm(self.conv(x).relu()).mean((2, 3)))


def _amp_wrapper(model, constructor):
    return build_optim_wrapper(
        model,
        dict(
            type='AmpOptimWrapper',
            loss_scale='dynamic',
            constructor=constructor,
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0.)))


def test_fused_adamw_under_grad_scaler_steps_and_skips_as_unfused(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)  # the same gradients on both sides
    torch.manual_seed(0)
    ref_model = Net().cuda()
    model = copy.deepcopy(ref_model)
    ref = _amp_wrapper(ref_model, 'DefaultOptimWrapperConstructor')
    ours = _amp_wrapper(model, 'GroupedOptimWrapperConstructor')
    assert all(g['fused'] for g in ours.optimizer.param_groups)
    assert not any(g.get('fused') for g in ref.optimizer.param_groups)
    x = torch.randn(4, 3, 16, 16, device='cuda')
    for step in range(4):
        poison = step == 2  # an inf gradient: GradScaler skips the step and halves its scale
        before = [p.detach().clone() for p in model.parameters()]
        scales = []
        for m, w in ((ref_model, ref), (model, ours)):
            with w.optim_context(m):
                loss = m(x).square().mean()
            if poison:
                loss = loss * float('inf')
            w.update_params(loss)
            scales.append(w.loss_scaler.get_scale())
        assert scales[0] == scales[1]
        for (name, a), b, b0 in zip(ref_model.named_parameters(), model.parameters(), before):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
            if poison:
                assert torch.equal(b, b0), name  # the skipped step left every weight as it was
    assert scales[0] < 2.0**16  # the poisoned step lowered the scale from its initial value


def test_device_sampler_draws_on_cuda_are_uniform():
    """The device permutation is a different random stream from the CPU's (by design): its subsets must
    still be uniform. 2,000 draws of 10 out of 50: each element is picked Binomial(2000, 0.2) times; the
    chi-square statistic over the 50 counts (49 degrees of freedom) stays under 95 (p ~ 1e-4)."""
    from mavit_mm.models.det import DeviceRandomSampler
    sampler = DeviceRandomSampler(num=16, pos_fraction=0.5)
    gallery = torch.arange(50, device='cuda') * 7
    counts = torch.zeros(50, device='cuda')
    pairs = torch.zeros(50, 50, device='cuda')
    for _ in range(2000):
        picked = sampler.random_choice(gallery, 10) // 7
        assert picked.device.type == 'cuda' and picked.unique().numel() == 10
        counts[picked] += 1
        pairs[picked[:, None], picked[None, :]] += 1
    expected = 2000 * 0.2
    chi2 = ((counts - expected)**2 / (expected * 0.8)).sum().item()
    assert chi2 < 95, chi2
    # pairs too: P(i and j both picked) = (10 * 9) / (50 * 49)
    off = pairs[~torch.eye(50, dtype=torch.bool, device='cuda')]
    assert abs(off.mean().item() / 2000 - 90 / 2450) < 0.005


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('soft', [False, True])
def test_device_mask_targets_equal_stock_on_cuda(dtype, soft):
    """mmcv's CUDA RoIAlign in both; proposals in fp32 and fp16 (pooled in their dtype, as stock), with a
    long kernel queued first so that the pinned non-blocking mask copy overlaps queued work."""
    from mmdet.structures.mask import BitmapMasks, mask_target

    from mavit_mm.models.det import mask_target_on_device
    rng = np.random.RandomState(0)
    h, w = 97, 131
    gts = [BitmapMasks((rng.rand(6, h, w) > 0.5).astype(np.uint8), h, w) for _ in range(2)]
    proposals, inds = [], []
    for _ in range(2):
        xy = torch.from_numpy(rng.uniform(-10, 120, (40, 2)))
        wh = torch.from_numpy(rng.uniform(2, 60, (40, 2)))
        proposals.append(torch.cat([xy, xy + wh], 1).to('cuda', dtype))
        inds.append(torch.from_numpy(rng.randint(0, 6, 40)).cuda())
    cfg = ConfigDict(mask_size=28, soft_mask_target=soft)
    expected = mask_target([p.clone() for p in proposals], inds, gts, cfg)
    busy = torch.randn(4096, 4096, device='cuda')
    for _ in range(4):
        busy = busy @ busy / 64  # queued work the mask copies must not wait for, nor race with
    got = torch.cat([mask_target_on_device(p, i, m, cfg) for p, i, m in zip(proposals, inds, gts)])
    assert got.dtype == expected.dtype == torch.float32 and got.device == expected.device
    assert torch.equal(got, expected)
    assert 0.05 < expected.float().mean() < 0.95
