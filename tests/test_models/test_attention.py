"""MAViT's attention layers: the softmax path against an explicit softmax, the heads' channel layout."""
import pytest
import torch

from mavit_mm.models.layers import MALAttention, RoPESoftmaxAttention, RotaryEmbedding2d, rope_softmax_attention
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
