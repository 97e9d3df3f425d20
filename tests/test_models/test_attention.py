"""MAViT's attention layers: the softmax path against an explicit softmax, the heads' channel layout."""
import pytest
import torch

from mavit_mm.models.layers import (MALAttention, RoPESoftmaxAttention, RotaryEmbedding2d, rope_softmax_attention,
                                    rotate_pairs)
from reference import rotary_complex, softmax_scores


def test_rotary_rejects_bad_head_dim():
    with pytest.raises(ValueError, match='divisible by 4'):
        RotaryEmbedding2d(36, 6)


def test_softmax_path_equals_explicit_softmax_on_rotated_qk():
    b, heads, h, w, d = 2, 2, 3, 7, 16
    q, k, v = torch.randn(3, b, heads, h * w, d)
    rope = RotaryEmbedding2d(d * heads, heads)
    sin, cos = rope((h, w))
    freqs = rope.angle[::2]
    rq, rk = rotary_complex(q, h, w, freqs), rotary_complex(k, h, w, freqs)
    expected = softmax_scores(rq, rk, d**-0.5) @ v.double()
    got = rope_softmax_attention(q, k, v, sin, cos, d**-0.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_softmax_path_keeps_cudnn_attention_off_and_puts_the_flags_back(monkeypatch):
    import torch.nn.functional as F

    from mavit_mm.models.layers import softmax_attention
    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled(),
                     torch.backends.cuda.mem_efficient_sdp_enabled()))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(softmax_attention.F, 'scaled_dot_product_attention', spy, raising=True)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    q, k, v = torch.randn(3, 1, 2, 12, 16)
    sin, cos = RotaryEmbedding2d(32, 2)((3, 4))
    rope_softmax_attention(q, k, v, sin, cos, 0.25)
    assert seen == [(False, True, True)]  # no cuDNN graph per sequence length; flash / memory-efficient on
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


@pytest.mark.parametrize('cls', [MALAttention, RoPESoftmaxAttention])
def test_attention_module_shapes_and_head_layout(cls):
    """Channel c of q/k/v belongs to head c // head_dim: perturbing head 0's channels of the
    input's v projection changes only head 0's output channels before ``proj``."""
    torch.manual_seed(0)
    m = cls(16, 2).double()
    m.proj = torch.nn.Identity()
    x = torch.randn(1, 16, 3, 5, dtype=torch.float64)
    rope = tuple(t.double() for t in RotaryEmbedding2d(16, 2)((3, 5)))
    with torch.no_grad():
        m.lepe.weight.zero_()
        m.lepe.bias.zero_()
        base = m(x, rope)
        m.qkvo.bias[32:40] += 1.0  # v channels of head 0
        moved = m(x, rope)
    assert base.shape == (1, 16, 3, 5)
    changed = (moved - base).abs().amax(dim=(0, 2, 3)) > 1e-9
    assert changed[:8].any() and not changed[8:].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_softmax_path_on_cuda_runs_no_cudnn_attention_and_matches_explicit_softmax():
    q, k, v = torch.randn(3, 2, 4, 7 * 9, 32, device='cuda', dtype=torch.float16)
    q.requires_grad_(True)
    sin, cos = RotaryEmbedding2d(128, 4).cuda()((7, 9))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = rope_softmax_attention(q, k, v, sin, cos, 32**-0.5)
        out.float().sum().backward()
    assert not [e.name for e in prof.events() if 'cudnn_attention' in e.name]
    rq, rk = (t.float() * cos + rotate_pairs(t.float()) * sin for t in (q.detach(), k))
    expected = torch.softmax(rq @ rk.transpose(-2, -1) * 32**-0.5, -1) @ v.float()
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=2e-3)
