"""The fused Triton MALA kernels against the naive op (itself checked against the paper's explicit
N x N form in test_mala.py), forward and backward.

On a GPU these run on CUDA. On CPU they run through Triton's interpreter when ``TRITON_INTERPRET=1``
is set before Triton compiles anything (CI runs this layer a second time that way); collected plainly
on a CPU machine they skip.
"""
import pytest
import torch

triton = pytest.importorskip('triton')

import mavit_mm.ops.mala as mala_op  # noqa: E402
from mavit_mm.models.layers.rotary import RotaryEmbedding2d  # noqa: E402
from mavit_mm.ops.mala import interpreting, naive  # noqa: E402
from mavit_mm.ops.mala import triton as mala_triton  # noqa: E402

INTERPRET = interpreting()
CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(
    not (CUDA or INTERPRET), reason='Triton kernels need a CUDA GPU (or TRITON_INTERPRET=1 on CPU)')
DEVICE = 'cuda' if CUDA and not INTERPRET else 'cpu'
mala_attention = naive.mala_attention

from helpers import rel_err as rel  # noqa: E402


def qkv_views(b, heads, h, w, d, channels_last, dtype=torch.float32, scale=1.0):
    """q, k, v as the attention block makes them: head views of one (B, 4C, H, W) conv output."""
    c = heads * d
    x = scale * torch.randn(b, 4 * c, h, w, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    views = [t.reshape(b, heads, d, h * w).transpose(-2, -1) for t in x.chunk(4, dim=1)[:3]]
    return x, views


def run(fn, x, views, sin, cos, grad):
    out = fn(*views, sin, cos, views[0].shape[-1]**-0.5)
    (gx, ) = torch.autograd.grad(out, x, grad)
    return out, gx


def _cases():
    """(shape, channels_last, rope): every layout at head_dim 64 by default, plus head_dim 96 (a 128-wide
    masked tile) channels-last with rotation and head_dim 16 NCHW without; each new head_dim, layout or
    rotation is a Triton compilation of four kernels, so the rest is the full sweep (``--gpu-full``)."""
    shapes = [(2, 1, 5, 7, 64), (1, 2, 17, 13, 96), (2, 3, 4, 4, 16), (1, 2, 9, 11, 32), (1, 1, 6, 6, 8)]
    default = {(shapes[0], cl, rope) for cl in (False, True) for rope in (True, False)}
    default |= {(shapes[1], True, True), (shapes[2], False, False)}
    for shape in shapes:
        for cl in (False, True):
            for rope in (True, False):
                case = (shape, cl, rope)
                layout = 'channels_last' if cl else 'nchw'
                name = f"{'x'.join(map(str, shape))}-{layout}-{'rope' if rope else 'no_rope'}"
                yield pytest.param(*case, id=name, marks=() if case in default else pytest.mark.gpu_full)


@pytest.mark.parametrize('shape,channels_last,rope', list(_cases()))
def test_kernels_match_reference_fp32(shape, channels_last, rope):
    b, heads, h, w, d = shape
    x, views = qkv_views(b, heads, h, w, d, channels_last)
    sin, cos = (t.to(DEVICE) for t in RotaryEmbedding2d(heads * d, heads)((h, w))) if rope else (None, None)
    grad = torch.randn(b, heads, h * w, d, device=DEVICE)
    out_r, gx_r = run(mala_attention, x, views, sin, cos, grad)
    out_k, gx_k = run(mala_triton.mala_attention_triton, x, views, sin, cos, grad)
    assert out_k.shape == out_r.shape and out_k.dtype == out_r.dtype
    assert rel(out_k, out_r) < 1e-5
    assert rel(gx_k, gx_r) < 1e-5  # dq, dk, dv (do stays zero)
    # the output keeps the input's layout, so the block's reshape back to (B, C, H, W) is a view
    assert out_k.stride(-2 if not channels_last else -1) == 1


def test_kernels_loop_over_chunks(monkeypatch):
    """Few programs, so each reduction program walks many token blocks and a ragged tail."""
    monkeypatch.setattr(mala_triton, '_TARGET_PROGRAMS', 2)
    x, views = qkv_views(1, 2, 19, 23, 32, channels_last=False)
    sin, cos = (t.to(DEVICE) for t in RotaryEmbedding2d(64, 2)((19, 23)))
    grad = torch.randn(1, 2, 19 * 23, 32, device=DEVICE)
    block = mala_triton.LAUNCH_CONFIGS[0][0]
    assert mala_triton._chunks(2, 19 * 23, block)[1] > block
    out_r, gx_r = run(mala_attention, x, views, sin, cos, grad)
    out_k, gx_k = run(mala_triton.mala_attention_triton, x, views, sin, cos, grad)
    assert rel(out_k, out_r) < 1e-5 and rel(gx_k, gx_r) < 1e-5


def test_kernels_fall_back_to_smaller_tiles_when_shared_memory_is_short(monkeypatch):
    """A kernel whose first launch configuration does not fit the GPU's shared memory (Triton raises
    OutOfResources before running it) runs with the next one and the same results; the choice is kept."""
    from triton.runtime.errors import OutOfResources

    class SmallSharedMemory:
        """A kernel as seen on a GPU that cannot fit tiles of more than 32 tokens."""

        def __init__(self, kernel):
            self.kernel, self.blocks = kernel, []

        def __getitem__(self, grid):

            def launch(*args, BLOCK, **kwargs):
                self.blocks.append(BLOCK)
                if BLOCK > 32:
                    raise OutOfResources(BLOCK * 4096, 32 * 4096, 'shared memory')
                return self.kernel[grid](*args, BLOCK=BLOCK, **kwargs)

            return launch

    names = ('_mala_fwd_reduce', '_mala_fwd_apply', '_mala_bwd_queries', '_mala_bwd_keys')
    fakes = {n: SmallSharedMemory(getattr(mala_triton, n)) for n in names}
    for n, fake in fakes.items():
        monkeypatch.setattr(mala_triton, n, fake)
    monkeypatch.setattr(mala_triton, '_chosen', {})
    x, views = qkv_views(1, 2, 9, 11, 32, channels_last=True)
    sin, cos = (t.to(DEVICE) for t in RotaryEmbedding2d(64, 2)((9, 11)))
    grad = torch.randn(1, 2, 99, 32, device=DEVICE)
    out_r, gx_r = run(mala_attention, x, views, sin, cos, grad)
    for _ in range(2):
        out_k, gx_k = run(mala_triton.mala_attention_triton, x, views, sin, cos, grad)
        assert rel(out_k, out_r) < 1e-5 and rel(gx_k, gx_r) < 1e-5
    assert mala_triton.LAUNCH_CONFIGS[0][0] == 64 and mala_triton.LAUNCH_CONFIGS[1][0] == 32
    # first call: 64 refused, then 32; second call: straight to 32
    assert all(fake.blocks == [64, 32, 32] for fake in fakes.values()), {n: f.blocks for n, f in fakes.items()}
    assert sorted(k[0] for k in mala_triton._chosen) == ['bwd_keys', 'bwd_queries', 'fwd_apply', 'fwd_reduce']
    assert set(mala_triton._chosen.values()) == {1}


def test_custom_op_registration():
    """torch.library's own checks of the op: fake (meta) shapes and strides, autograd, schema."""
    _, views = qkv_views(1, 2, 6, 5, 32, channels_last=True)
    q, k, v = (t.detach().requires_grad_(True) for t in views)
    sin, cos = (t.to(DEVICE) for t in RotaryEmbedding2d(64, 2)((6, 5)))
    torch.library.opcheck(
        mala_triton._mala_fwd_op, (q, k, v, sin, cos, 32**-0.5),
        test_utils=('test_schema', 'test_autograd_registration', 'test_faketensor'))


@pytest.mark.skipif(INTERPRET, reason='half precision needs the GPU (the interpreter computes in numpy)')
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 30.0])
def test_kernels_half_precision_inputs(dtype, scale):
    """bf16/fp16 inputs over magnitudes: finite, and within 1e-2 of the fp32 reference on the same
    (rounded) inputs; 65k tokens, where half-precision sums would overflow."""
    x, views = qkv_views(1, 1, 128, 512, 64, channels_last=True, dtype=dtype, scale=scale)
    sin, cos = (t.to(DEVICE) for t in RotaryEmbedding2d(64, 1)((128, 512)))
    grad = torch.randn(1, 1, 128 * 512, 64, device=DEVICE, dtype=dtype)
    out_k, gx_k = run(mala_triton.mala_attention_triton, x, views, sin, cos, grad)
    x32, views32 = x.detach().float().requires_grad_(True), None
    views32 = [t.reshape(1, 1, 64, -1).transpose(-2, -1) for t in x32.chunk(4, dim=1)[:3]]
    out_r, gx_r = run(mala_attention, x32, views32, sin, cos, grad.float())
    assert out_k.dtype == dtype and torch.isfinite(out_k).all() and torch.isfinite(gx_k).all()
    assert rel(out_k, out_r) < 1e-2 and rel(gx_k, gx_r) < 1e-2


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16], ids=['fp32', 'fp16', 'bf16'])
def test_self_check_runs_in_the_callers_dtype(monkeypatch, dtype):
    """The one-time self-check runs at the dtype and head width of the first call (so that it compiles
    the variants the model uses), passes for the real kernels, and is remembered per dtype."""
    monkeypatch.setattr(mala_op, '_KERNELS_OK', {})
    calls = []
    kernels = mala_triton.mala_attention_triton
    monkeypatch.setattr(mala_triton, 'mala_attention_triton', lambda q, *a: calls.append(
        (q.dtype, q.shape[-1])) or kernels(q, *a))
    q, k, v = torch.randn(3, 1, 2, 42, 32, device=DEVICE).to(dtype)
    assert mala_op.kernels_usable(q)
    assert calls == [(dtype, 32)] and mala_op._KERNELS_OK == {(q.device, dtype, False): True}
    assert mala_op.kernels_usable(q) and len(calls) == 1  # checked once


def test_self_check_runs_the_backward_only_for_callers_that_need_gradients(monkeypatch):
    """Inference (no gradients) checks the forward kernels alone: on a cold kernel cache it compiles no
    backward kernel it would never launch. A caller that needs gradients gets the backward checked once
    more; a passed backward check stands for the forward too."""
    monkeypatch.setattr(mala_op, '_KERNELS_OK', {})
    backwards = []
    backward = mala_triton.mala_backward
    monkeypatch.setattr(mala_triton, 'mala_backward', lambda *a: backwards.append(1) or backward(*a))
    q = torch.randn(1, 2, 42, 32, device=DEVICE)
    with torch.no_grad():
        assert mala_op.kernels_usable(q.requires_grad_(True))
    assert backwards == [] and mala_op._KERNELS_OK == {(q.device, torch.float32, False): True}
    assert mala_op.kernels_usable(q) and backwards == [1]
    assert mala_op._KERNELS_OK == {(q.device, torch.float32, False): True, (q.device, torch.float32, True): True}
    monkeypatch.setattr(mala_op, '_KERNELS_OK', {(q.device, torch.float32, True): True})
    assert mala_op.kernels_usable(q.detach()) and len(backwards) == 1


def test_failed_self_check_falls_back_to_naive(monkeypatch):
    """Kernels that compute something else (or fail to compile) on a device are caught by a one-time
    self-check: a warning, and the op runs the naive form there."""
    monkeypatch.setattr(mala_op, '_KERNELS_OK', {})
    assert mala_op.check_kernels(torch.device(DEVICE))  # the real kernels pass
    monkeypatch.setattr(mala_op, '_KERNELS_OK', {})
    monkeypatch.setattr(mala_triton, 'mala_attention_triton', lambda q, k, v, sin, cos, s: 2 * v)
    q, k, v = torch.randn(3, 1, 1, 42, 64, device=DEVICE)
    with pytest.warns(RuntimeWarning, match='failed their self-check'):
        out = mala_op.mala(q, k, v)
    assert torch.equal(out, mala_op.mala(q, k, v, backend='naive'))


def test_kernels_trace_into_one_torch_compile_graph(monkeypatch):
    """The custom op is compile-friendly: a whole MALA layer (convs, kernels, autograd) traces into one
    graph (fullgraph=True: no graph breaks), runs the kernels and computes what the eager layer computes."""
    import torch._dynamo

    from mavit_mm.models.layers.mala import MALAttention
    calls = []
    forward = mala_triton.mala_forward
    monkeypatch.setattr(mala_triton, 'mala_forward', lambda *a: calls.append(1) or forward(*a))
    torch._dynamo.reset()
    assert mala_op.check_kernels(torch.device(DEVICE))  # inside a trace only a checked device is used
    layer = MALAttention(64, 1).to(DEVICE)
    layer.use_kernels = True
    x = torch.randn(1, 64, 6, 7, device=DEVICE).contiguous(memory_format=torch.channels_last)
    rope = tuple(t.to(DEVICE) for t in RotaryEmbedding2d(64, 1)((6, 7)))
    compiled = torch.compile(layer, backend='aot_eager', fullgraph=True)
    results = []
    for fn in (layer, compiled):
        calls.clear()
        xx = x.clone().requires_grad_(True)
        out = fn(xx, rope)
        results.append((out, torch.autograd.grad(out.square().sum(), xx)[0]))
        assert calls  # the Triton forward ran, eager and compiled
    assert rel(results[1][0], results[0][0]) < 1e-5 and rel(results[1][1], results[0][1]) < 1e-5
