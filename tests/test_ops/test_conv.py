"""The fast path's convolutions against ``F.conv2d`` in float64, forward and backward.

The depthwise Triton kernels run on CUDA, or on CPU through Triton's interpreter when
``TRITON_INTERPRET=1`` is set (CI runs this layer a second time that way); on a plain CPU run the
kernel cases skip and only the fallbacks are checked.
"""
import pytest
import torch
import torch.nn.functional as F

from mavit_mm.ops.conv import (conv2d_in_size_buckets, cudnn_without_benchmark, depthwise_conv, pointwise_conv,
                               size_bucket)
from mavit_mm.ops.depthwise import kernels_take
from mavit_mm.ops.mala import interpreting

INTERPRET = interpreting()
CUDA = torch.cuda.is_available()
KERNELS = CUDA or INTERPRET
DEVICE = 'cuda' if CUDA and not INTERPRET else 'cpu'
needs_kernels = pytest.mark.skipif(not KERNELS, reason='Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1 on CPU)')

from helpers import rel_err as rel  # noqa: E402


def _reference(x, w, b):
    """F.conv2d in float64 on the CPU, with its gradients for a fixed output gradient."""
    xx, ww, bb = (t.detach().double().cpu().requires_grad_(True) for t in (x, w, b))
    y = F.conv2d(xx, ww, bb, padding=w.shape[-1] // 2, groups=x.shape[1])
    return xx, ww, bb, y


def _map(b, c, h, w, layout, dtype):
    """A (B, C, H, W) map: 'channels_last', 'nchw', or 'slice' (a channel slice of a channels-last
    map with 3 x C channels, as the attention's v is of the qkvo output)."""
    if layout == 'slice':
        full = torch.randn(b, 3 * c, h, w, device=DEVICE).contiguous(memory_format=torch.channels_last)
        return full[:, c:2 * c].to(dtype) if dtype == torch.float32 else full.to(dtype)[:, c:2 * c]
    x = torch.randn(b, c, h, w, device=DEVICE, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


@needs_kernels
@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('shape,layout', [((2, 20, 9, 11), 'channels_last'), ((1, 72, 5, 3), 'slice'),
                                          ((2, 8, 1, 7), 'nchw'), ((1, 65, 4, 4), 'channels_last')])
def test_depthwise_kernels_match_conv2d(kernel_size, shape, layout):
    b, c, h, w = shape
    x = _map(b, c, h, w, layout, torch.float32).requires_grad_(True)
    weight = torch.randn(c, 1, kernel_size, kernel_size, device=DEVICE, requires_grad=True)
    bias = torch.randn(c, device=DEVICE, requires_grad=True)
    assert kernels_take(x, weight)
    y = depthwise_conv(x, weight, bias)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, weight, bias), grad)
    xx, ww, bb, ref = _reference(x, weight, bias)
    rgx, rgw, rgb = torch.autograd.grad(ref, (xx, ww, bb), grad.double().cpu())
    for got, want in ((y, ref), (gx, rgx), (gw, rgw), (gb, rgb)):
        assert got.dtype == torch.float32
        assert rel(got.double().cpu(), want) < 1e-5


@needs_kernels
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_depthwise_kernels_half_precision(dtype):
    if INTERPRET and dtype == torch.bfloat16:
        pytest.skip("numpy, under Triton's interpreter, has no bfloat16")
    x = _map(2, 24, 7, 9, 'channels_last', dtype).requires_grad_(True)
    weight = torch.randn(24, 1, 3, 3, device=DEVICE, dtype=dtype, requires_grad=True)
    y = depthwise_conv(x, weight)
    grad = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, weight), grad)
    xx, ww, _, ref = _reference(x, weight, torch.zeros(24))
    rgx, rgw = torch.autograd.grad(ref, (xx, ww), grad.double().cpu())
    for got, want in ((y, ref), (gx, rgx), (gw, rgw)):
        assert got.dtype == dtype
        assert rel(got.double().cpu(), want) < 1e-2


@needs_kernels
@pytest.mark.skipif(not CUDA or INTERPRET, reason='autocast of the kernels: CUDA only')
def test_depthwise_under_autocast_matches_conv2d_under_autocast():
    x = torch.randn(2, 32, 13, 10, device='cuda').contiguous(memory_format=torch.channels_last).requires_grad_(True)
    conv = torch.nn.Conv2d(32, 32, 5, padding=2, groups=32).cuda()
    with torch.autocast('cuda', dtype=torch.float16):
        y = depthwise_conv(x, conv.weight, conv.bias)
        ref = conv(x)
    assert y.dtype == ref.dtype == torch.float16
    grads = torch.autograd.grad(y.float().square().sum(), (x, conv.weight, conv.bias))
    refs = torch.autograd.grad(ref.float().square().sum(), (x, conv.weight, conv.bias))
    for got, want in zip(grads, refs):
        assert got.dtype == want.dtype
        assert rel(got.float(), want.float()) < 5e-3


@needs_kernels
@pytest.mark.parametrize(
    'x_dtype,compute', [(torch.float32, torch.float32), (torch.float32, torch.float16), (torch.float16, torch.float16)],
    ids=['fp32', 'fp32-skip-fp16-autocast', 'fp16'])
@pytest.mark.parametrize('layout', ['channels_last', 'nchw'])
def test_residual_depthwise_gives_the_two_operations_values(x_dtype, compute, layout):
    """``depthwise_conv(x, w, b, residual=True)`` (one kernel each way) against ``x + depthwise_conv(x, w, b)``
    (autocast's cast of x, the convolution, the sum; in the backward the casts and the sum of both
    gradients): the same output and input gradient bit for bit, the weight and bias gradients to fp32
    summation order, in x's dtype. Under fp16 autocast an fp32 x is the blocks' residual stream."""
    device = DEVICE
    x = _map(2, 40, 9, 7, layout, x_dtype).requires_grad_(True)
    weight = (0.3 * torch.randn(40, 1, 3, 3, device=device)).to(compute).requires_grad_(True)
    bias = torch.randn(40, device=device).to(compute).requires_grad_(True)
    autocast = torch.autocast(device, dtype=torch.float16, enabled=compute != x_dtype)
    results = []
    for residual in (True, False):
        with autocast:
            y = depthwise_conv(x, weight, bias, residual=True) if residual else x + depthwise_conv(x, weight, bias)
        assert y.dtype == x_dtype
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(device, x_dtype)
        results.append((y, *torch.autograd.grad(y, (x, weight, bias), grad)))
    (y, gx, gw, gb), (ref, rgx, rgw, rgb) = results
    assert torch.equal(y, ref) and torch.equal(gx, rgx)
    assert gw.dtype == gb.dtype == compute
    tol = 1e-5 if compute == torch.float32 else 1e-3
    assert rel(gw.float(), rgw.float()) < tol and rel(gb.float(), rgb.float()) < tol
    # and both against float64, so that a shared mistake cannot pass
    xx, ww, bb, conv = _reference(x, weight, bias)
    assert rel(y.double().cpu(), xx + conv) < (1e-6 if compute == torch.float32 else 2e-3)


def test_depthwise_falls_back_to_conv2d_where_kernels_do_not_run():
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    weight = torch.randn(6, 1, 3, 3, dtype=torch.float64)
    assert not kernels_take(x, weight)  # float64 stays with F.conv2d everywhere
    assert torch.equal(depthwise_conv(x, weight), F.conv2d(x, weight, padding=1, groups=6))
    assert not kernels_take(x.float(), torch.randn(6, 1, 4, 4))  # even kernels: not 'same'


@pytest.mark.parametrize('channels_last', [False, True])
def test_pointwise_conv_matches_conv2d(channels_last):
    # exact fp32 on CUDA: cuDNN (the NCHW fallback) and cuBLAS would otherwise be allowed TF32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(2, 16, 5, 7, device=DEVICE if CUDA else 'cpu', requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(24, 16, 1, 1, device=x.device, requires_grad=True)
    bias = torch.randn(24, device=x.device, requires_grad=True)
    y = pointwise_conv(x, weight, bias)
    ref = F.conv2d(x.double(), weight.double(), bias.double())
    assert y.shape == ref.shape
    assert rel(y.double(), ref) < 1e-5
    grad = torch.randn_like(y)
    for got, want in zip(
            torch.autograd.grad(y, (x, weight, bias), grad), torch.autograd.grad(ref, (x, weight, bias),
                                                                                 grad.double())):
        assert rel(got.double(), want.double()) < 1e-5


@pytest.mark.parametrize('before', [True, False])
def test_cudnn_without_benchmark_turns_it_off_inside_and_puts_it_back(before):
    torch.backends.cudnn.benchmark = before
    try:
        with cudnn_without_benchmark():
            assert torch.backends.cudnn.benchmark is False
        assert torch.backends.cudnn.benchmark is before
        with pytest.raises(RuntimeError, match='inside'), cudnn_without_benchmark():
            raise RuntimeError('inside')
        assert torch.backends.cudnn.benchmark is before  # also after an error
    finally:
        torch.backends.cudnn.benchmark = False


def test_size_buckets_are_four_per_octave_and_less_than_a_quarter_larger():
    sizes = (1, 8, 9, 200, 512, 513, 800, 1333, 1344, 2048)
    assert [size_bucket(n) for n in sizes] == [8, 8, 16, 224, 512, 640, 896, 1536, 1536, 2048]
    sizes = [size_bucket(n) for n in range(1, 4097)]
    assert all(0 <= b - n < max(8, n / 4) for n, b in zip(range(1, 4097), sizes))
    assert len(set(b for b in sizes if 1024 < b <= 2048)) == 4  # 1280, 1536, 1792, 2048


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('hw', [(29, 40), (33, 57), (65, 64), (7, 9)])
def test_conv_in_size_buckets_matches_conv2d_with_gradients(stride, hw):
    """Padding to the bucket and cropping computes the convolution itself, forward and every gradient."""
    g = torch.Generator().manual_seed(stride * 100 + hw[0])
    x = torch.randn(2, 5, *hw, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    grads = []
    plain = lambda: F.conv2d(x, w, b, stride, 1)  # noqa: E731
    buckets = lambda: conv2d_in_size_buckets(x, w, b, (stride, stride), (1, 1))  # noqa: E731
    for fn in (plain, buckets):
        y = fn()
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        grads.append((y, *torch.autograd.grad(y, (x, w, b), gy)))
    assert size_bucket(hw[0]) != hw[0] or size_bucket(hw[1]) != hw[1]  # the padded form ran
    assert grads[1][0].is_contiguous()
    for ref, got in zip(*grads):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
