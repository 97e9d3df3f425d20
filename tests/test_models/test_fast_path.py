"""The backbone's fast path (Triton MALA kernels, channels-last maps) against plain PyTorch.

The CUDA tests cover all four archs (``--gpu-full``; tiny by default), odd sizes, fp32 and bf16 / fp16
autocast, outputs and gradients. The whole-backbone kernel test also runs on CPU under
``TRITON_INTERPRET=1`` (CI's interpreter step).
"""
import copy

import pytest
import torch

from mavit_mm import MAViT
from mavit_mm.ops.mala import interpreting, kernels_can_run, triton_available
from helpers import forward_backward, grad_err, randomize_, rel_err

CUDA = torch.cuda.is_available()
full = pytest.mark.gpu_full
# the archs the CUDA tests sweep: tiny by default, all four with --gpu-full
GPU_ARCHS = ['t'] + [pytest.param(a, marks=full) for a in 'sbl']
needs_cuda = pytest.mark.skipif(not CUDA, reason='fast-path kernels need a CUDA GPU')


def pair(arch, device: str, **kwargs):
    # no stochastic depth: both paths must see the same function in train mode
    ref = randomize_(MAViT(arch=arch, fast_path='off', drop_path_rate=0.0, **kwargs)).to(device)
    return ref, copy.deepcopy(ref).set_fast_path('auto')


def test_fast_path_values():
    assert MAViT().fast_path == 'auto' and MAViT(fast_path='off').fast_path == 'off'
    for wrong in ('kernels', 'compile', 'triton'):
        with pytest.raises(ValueError, match=r"fast_path must be one of \('auto', 'off'\), got '" + wrong):
            MAViT(fast_path=wrong)
    with pytest.raises(ValueError, match='fast_path must be one of'):
        MAViT().set_fast_path('fast')
    # on a CPU tensor 'auto' is plain PyTorch (unless Triton's interpreter is on): maps stay NCHW
    assert kernels_can_run(torch.zeros(1)) == (triton_available() and interpreting())


@pytest.mark.skipif(
    not (CUDA or interpreting()) or not triton_available(),
    reason='Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1 on CPU)')
@pytest.mark.parametrize('with_cp', [False, ['ffn']], ids=['keep', 'ffn'])
def test_backbone_kernels_match_plain_pytorch(with_cp):
    """A whole (small) MAViT on the fast path (Triton MALA, channels-last maps; with and without the
    FFN's recomputation) against fast_path='off': outputs and input gradient in fp32, train mode."""
    device = 'cuda' if CUDA and not interpreting() else 'cpu'
    # exact fp32 convolutions: TF32 would differ between the NCHW and channels-last algorithms (8e-4)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    # head_dim 64 and 96 (MAViT-B/L's MALA stages, 128-wide tiles with masked channels)
    arch = dict(embed_dims=[64, 192, 64, 64], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 2])
    ref, fast = pair(arch, device, with_cp=with_cp)
    x = torch.randn(2, 3, 75, 53, device=device)
    results = []
    for model in (ref.train(), fast.train()):
        xx = x.clone().requires_grad_(True)
        outs = model(xx)
        weights = [
            torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(device) for i, o in enumerate(outs)
        ]
        (gx, ) = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), xx)
        results.append((outs, gx))
    (outs_r, gx_r), (outs_f, gx_f) = results
    assert all(o.is_contiguous() for o in outs_f)  # NCHW again for necks and heads
    assert max(rel_err(a, b) for a, b in zip(outs_f, outs_r)) < 1e-4
    assert rel_err(gx_f, gx_r) < 1e-4


@needs_cuda
@pytest.mark.parametrize('arch', GPU_ARCHS)
@pytest.mark.parametrize('size', [(224, 224), (97, 131)])
def test_fast_path_matches_reference_fp32(arch, size):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref, fast = pair(arch, 'cuda')
    x = torch.randn(2, 3, *size, device='cuda')
    outs_r, gx_r, grads_r = forward_backward(ref.train(), x)
    outs_f, gx_f, grads_f = forward_backward(fast.train(), x)
    assert max(rel_err(a, b) for a, b in zip(outs_f, outs_r)) < 1e-4
    assert rel_err(gx_f, gx_r) < 1e-4
    assert grad_err(grads_f, grads_r) < 1e-4


@needs_cuda
@pytest.mark.parametrize('arch', GPU_ARCHS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_fast_path_matches_reference_autocast(arch, dtype):
    """Documented tolerance under autocast: the fast path is as accurate as the reference, both
    measured against the fp32 result: at most 1.5x the reference's own error (+1e-3). A direct
    comparison would be meaningless: bf16 runs of the same network that differ only in memory layout
    differ by a few percent (test_bf16_error_of_a_layout_change_on_cpu prints the figures)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref, fast = pair(arch, 'cuda')
    x = torch.randn(2, 3, 128, 160, device='cuda')
    outs_32, gx_32, _ = forward_backward(copy.deepcopy(ref).train(), x)
    outs_r, gx_r, _ = forward_backward(ref.train(), x, dtype)
    outs_f, gx_f, _ = forward_backward(fast.train(), x, dtype)
    for a, b, exact in zip(outs_f, outs_r, outs_32):
        assert torch.isfinite(a).all()
        assert rel_err(a, exact) <= 1.5 * rel_err(b, exact) + 1e-3
    assert torch.isfinite(gx_f).all()
    assert rel_err(gx_f, gx_32) <= 1.5 * rel_err(gx_r, gx_32) + 1e-3


def test_bf16_error_of_a_layout_change_on_cpu():
    """Why the autocast test compares errors against fp32: the reference on channels-last input under
    bf16 is as accurate as on NCHW input, yet the two bf16 results differ from each other by a few
    percent. ``pytest -s -k layout_change`` prints the figures quoted in docs/speed.md."""
    ref, _ = pair('t', 'cpu')
    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    outs_32, gx_32, _ = forward_backward(copy.deepcopy(ref).train(), x)
    outs_a, gx_a, _ = forward_backward(copy.deepcopy(ref).train(), x, torch.bfloat16)
    outs_b, gx_b, _ = forward_backward(
        copy.deepcopy(ref).train(), x.contiguous(memory_format=torch.channels_last), torch.bfloat16)
    errs_a = [rel_err(a, e) for a, e in zip(outs_a, outs_32)] + [rel_err(gx_a, gx_32)]
    errs_b = [rel_err(b, e) for b, e in zip(outs_b, outs_32)] + [rel_err(gx_b, gx_32)]
    between = [rel_err(b, a) for a, b in zip(outs_b, outs_a)] + [rel_err(gx_b, gx_a)]
    print('\nbf16 vs fp32, NCHW          (4 outputs, input grad):', ' '.join(f'{e:.4f}' for e in errs_a))
    print('bf16 vs fp32, channels-last  (4 outputs, input grad):', ' '.join(f'{e:.4f}' for e in errs_b))
    print('bf16 NCHW vs bf16 channels-last                      :', ' '.join(f'{e:.4f}' for e in between))
    assert all(b <= 1.5 * a + 1e-3 for a, b in zip(errs_a, errs_b))


@needs_cuda
@pytest.mark.parametrize('fast_path', ['auto', 'off'])
def test_stem_and_downsample_convs_skip_cudnn_benchmarking_on_the_fast_path(fast_path, monkeypatch):
    # mmseg's runtime sets cudnn.benchmark, which times every algorithm per new input size
    model = MAViT(arch='t', fast_path=fast_path).cuda().eval()
    # the stem's four and the downsamples' three dense 3x3 convolutions (the blocks' 3x3 ones are depthwise)
    dense = {
        id(m.weight)
        for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.kernel_size == (3, 3)
    }
    seen, conv2d = [], torch.nn.functional.conv2d

    def spy(x, weight, *args, **kwargs):  # F.conv2d, whether the module or the size buckets call it
        if id(weight) in dense:
            seen.append((torch.backends.cudnn.benchmark, tuple(x.shape[-2:])))
        return conv2d(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, 'conv2d', spy)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, 100, 150, device='cuda'))
        assert torch.backends.cudnn.benchmark is True  # the user's setting, back after the forward
    finally:
        torch.backends.cudnn.benchmark = saved
    assert len(dense) == 7
    assert [benchmark for benchmark, _ in seen] == [fast_path == 'off'] * 7
    # the fast path hands cuDNN bucketed sizes: 100 x 150 -> 112 x 160; the plain path the sizes themselves
    assert seen[0][1] == ((112, 160) if fast_path == 'auto' else (100, 150))
