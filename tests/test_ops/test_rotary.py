"""The fused rotary kernels of the softmax stages (``mavit_mm.ops.rotary.rotate_to``) against the plain form
``apply_rotary(x, sin, cos).to(dtype)``: equal outputs and input gradients, bit for bit, on the head views
the attention hands them. On CUDA, or on CPU under ``TRITON_INTERPRET=1`` (CI's interpreter step)."""
import pytest
import torch

from mavit_mm.ops.mala import interpreting, triton_available
from mavit_mm.ops.rotary import apply_rotary, kernels_take, rotate_to

CUDA = torch.cuda.is_available()
KERNELS = triton_available() and (CUDA or interpreting())
DEVICE = 'cuda' if CUDA and not interpreting() else 'cpu'
needs_kernels = pytest.mark.skipif(not KERNELS, reason='Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1)')


def head_view(heads: int, head_dim: int, h: int, w: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """q as the attention sees it: a head view of a channels-last ``qkvo`` map, ``(1, heads, h * w, head_dim)``."""
    g = torch.Generator().manual_seed(seed)
    qkvo = (torch.randn(1, 4 * heads * head_dim, h, w, generator=g) * 4).to(DEVICE, dtype)
    qkvo = qkvo.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    return qkvo, qkvo.chunk(4, dim=1)[0].reshape(1, heads, head_dim, h * w).transpose(-2, -1)


# Triton's CPU interpreter converts fp32 to bf16 by truncation; the GPU, like torch, rounds to nearest even
BF16 = pytest.param(
    torch.bfloat16,
    torch.bfloat16,
    marks=pytest.mark.skipif(interpreting(), reason="the interpreter's bf16 conversion truncates"))


@needs_kernels
@pytest.mark.parametrize(
    'x_dtype, dtype', [(torch.float32, torch.float32), (torch.float16, torch.float16), BF16,
                       (torch.float16, torch.float32)],
    ids=['fp32', 'fp16', 'bf16', 'fp16-to-fp32'])
@pytest.mark.parametrize('head_dim, heads, h, w', [(64, 2, 9, 11), (24, 3, 5, 70)], ids=['d64', 'd24'])
def test_rotate_to_equals_the_plain_form_bit_for_bit(x_dtype, dtype, head_dim, heads, h, w):
    n = h * w
    theta = torch.rand(n, head_dim, generator=torch.Generator().manual_seed(1)).to(DEVICE) * 50
    sin, cos = theta.sin(), theta.cos()
    grad = torch.randn(1, heads, n, head_dim, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    results = []
    for fused in (False, True):
        qkvo, q = head_view(heads, head_dim, h, w, x_dtype, seed=0)
        assert kernels_take(q, sin, cos, dtype)
        y = rotate_to(q, sin, cos, dtype, fused=fused)
        assert y.dtype == dtype and y.shape == q.shape and y.is_contiguous()
        y.backward(grad)
        results.append((y.detach(), qkvo.grad))
    (y_ref, g_ref), (y, g) = results
    assert torch.equal(y, y_ref)
    assert torch.equal(g, g_ref)
    assert torch.equal(y_ref, apply_rotary(q.detach(), sin, cos).to(dtype))


def test_rotate_to_falls_back_where_the_kernels_do_not_apply():
    """Half-precision tables (a model cast with ``.half()``), tables that need a gradient, odd widths and
    CPU tensors outside the interpreter take the plain form."""
    x = torch.randn(1, 2, 6, 8)
    theta = torch.rand(6, 8)
    sin, cos = theta.sin(), theta.cos()
    assert not kernels_take(x, sin.half(), cos.half(), torch.float32)
    assert not kernels_take(x, sin.requires_grad_(True), cos, torch.float32)
    assert not kernels_take(torch.randn(1, 2, 6, 7), torch.rand(6, 7), torch.rand(6, 7), torch.float32)
    assert kernels_take(x, theta.sin(), cos, torch.float32) == (triton_available() and interpreting())
    assert not kernels_take(x, theta.sin(), cos, torch.float64)
    torch.testing.assert_close(
        rotate_to(x, sin.detach(), cos, torch.float64), apply_rotary(x, sin, cos).double(), rtol=0, atol=0)


@needs_kernels
def test_the_self_check_passes_here_and_a_failing_one_falls_back():
    """The kernels pass their self-check in fp32 / fp16 (cached per device, dtypes and head layout). Where they
    compute other values, as Triton's CPU interpreter does in bf16 (it truncates), the check warns once and
    ``rotate_to`` takes the plain form, so the values stay the plain ones."""
    from mavit_mm.ops import rotary
    _, q = head_view(2, 64, 3, 5, torch.float16, seed=3)
    assert rotary.check_kernels(q, torch.float16) and rotary.check_kernels(q.detach(), torch.float32)
    _, q = head_view(2, 64, 3, 5, torch.bfloat16, seed=3)
    if not interpreting():
        assert rotary.check_kernels(q, torch.bfloat16)
        return
    theta = torch.rand(15, 64, generator=torch.Generator().manual_seed(4)) * 50
    with pytest.warns(RuntimeWarning, match='rotary kernels failed their self-check'):
        y = rotate_to(q, theta.sin(), theta.cos(), torch.bfloat16)
    assert torch.equal(y, apply_rotary(q, theta.sin(), theta.cos()).to(torch.bfloat16))
