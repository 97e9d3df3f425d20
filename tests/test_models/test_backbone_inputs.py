"""The backbone on the inputs users give it: mixed precision over orders of magnitude (CPU bf16; CUDA fp16 /
bf16 on both paths), any size from 32 px and any batch, batch-1 training on odd sizes, other channel counts
with a pretrained RGB stem adapted."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mavit_mm import MAViT
from helpers import randomize_

CUDA = torch.cuda.is_available()
# the archs the CUDA tests sweep: tiny by default, all four with --gpu-full (or MAVIT_GPU_TEST_ARCHS=tsbl)
_ARCHS_ENV = os.environ.get('MAVIT_GPU_TEST_ARCHS', '')
GPU_ARCHS = ['t'] + [a if a in _ARCHS_ENV else pytest.param(a, marks=pytest.mark.gpu_full) for a in 'sbl']


# ---------------------------------------------------------------- mixed precision
# tiny, and base for what tiny lacks (head_dim 96 in the MALA stages, layer scales of 1e-6); small and large
# add nothing new here and are the slowest on a CPU without native bf16
@pytest.mark.parametrize('arch', ['t', 'b'])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e3])
def test_bf16_autocast_cpu_no_nan_over_magnitudes(arch, scale):
    model = randomize_(MAViT(arch=arch, fast_path='off')).train()
    with torch.no_grad():  # weights over orders of magnitude too
        for name, p in model.named_parameters():
            if 'qkvo' in name or 'proj' in name:
                p.mul_(scale**0.5)
    x = (scale * torch.randn(2, 3, 64, 64)).requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs)
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not CUDA, reason='fp16 / bf16 autocast on CUDA needs a GPU')
@pytest.mark.parametrize('arch', GPU_ARCHS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e2])
@pytest.mark.parametrize('fast_path', ['off', 'auto'])
def test_cuda_autocast_no_nan_over_magnitudes(arch, dtype, scale, fast_path):
    model = randomize_(MAViT(arch=arch, fast_path=fast_path)).cuda().train()
    x = (scale * torch.randn(2, 3, 96, 128, device='cuda')).requires_grad_(True)
    with torch.autocast('cuda', dtype=dtype):
        outs = model(x)
    sum(o.float().pow(2).mean() for o in outs).backward()
    assert all(torch.isfinite(o).all() for o in outs) and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- inputs
@settings(max_examples=12, deadline=None, derandomize=True)
@given(h=st.integers(32, 160), w=st.integers(32, 160), batch=st.integers(1, 3))
def test_any_size_from_32px_and_any_batch(h, w, batch):
    model = MAViT(
        arch=dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2]), fast_path='off').eval()
    with torch.no_grad():
        outs = model(torch.randn(batch, 3, h, w))
    for i, o in enumerate(outs):
        expected = (h, w)
        for _ in range(i + 2):
            expected = tuple((s + 1) // 2 for s in expected)
        assert o.shape == (batch, model.embed_dims[i], *expected) and torch.isfinite(o).all()


def test_training_at_batch_one_on_odd_sizes():
    model = MAViT(arch='tiny', fast_path='off').train()
    outs = model(torch.randn(1, 3, 33, 47))
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('channels', [1, 4])
def test_in_channels_and_pretrained_stem_adaptation(tmp_path, channels):
    rgb = randomize_(MAViT(arch='tiny', fast_path='off')).eval()
    ckpt = tmp_path / 'rgb.pth'
    torch.save({'state_dict': rgb.state_dict()}, ckpt)
    model = MAViT(
        arch='tiny', in_channels=channels, fast_path='off', init_cfg=dict(type='Pretrained',
                                                                          checkpoint=str(ckpt))).eval()
    model.init_weights()
    image = torch.randn(1, 3, 64, 64)
    gray = image.mean(1, keepdim=True)
    with torch.no_grad():
        if channels == 1:  # a gray image seen as 1 channel == the same image as R = G = B
            torch.testing.assert_close(model(gray)[0], rgb(gray.expand(-1, 3, -1, -1))[0], rtol=1e-4, atol=1e-4)
        else:
            out = model(torch.randn(1, 4, 64, 64))
            assert torch.isfinite(out[0]).all()
    with pytest.raises(ValueError, match=f'expects \\(B, {channels}, H, W\\).*in_channels'):
        model(image if channels != 3 else gray)
