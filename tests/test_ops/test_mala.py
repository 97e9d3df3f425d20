"""The MALA op's naive form against the paper's equations written out independently (tests/reference.py):
the explicit N x N scores of Eq. 13, their row sums, and the magnitude sharpening of Eq. 10-12."""
import pytest
import torch

from mavit_mm.models.layers import RotaryEmbedding2d
from mavit_mm.ops.mala import mala
from mavit_mm.ops.mala.naive import mala_attention
from mavit_mm.ops.mala.naive import mala_scores as naive_scores
from mavit_mm.ops.rotary import apply_rotary
from reference import linear_attention_scores, mala_scores, phi, rotary_complex


def phi_inverse(y: torch.Tensor) -> torch.Tensor:
    """The q with phi(q) = y (y > 0)."""
    return torch.where(y >= 1, y - 1, torch.log(y))


def identity_rope(n: int, d: int):
    return torch.zeros(n, d, dtype=torch.float64), torch.ones(n, d, dtype=torch.float64)


def mala_score_matrix(q, k, sin, cos, scale):
    """Scores of the linear-time MALA: with v = I (N x N) its output *is* the score matrix."""
    n = q.shape[-2]
    v = torch.eye(n, dtype=q.dtype).expand(*q.shape[:-2], n, n)
    return mala_attention(q, k, v, sin, cos, scale)


def test_rotary_matches_complex_rotation():
    h, w, d = 3, 5, 16
    sin, cos = RotaryEmbedding2d(d * 2, 2)((h, w))
    x = torch.randn(2, 2, h * w, d)
    freqs = RotaryEmbedding2d(d * 2, 2).angle[::2]
    torch.testing.assert_close(apply_rotary(x, sin, cos).double(), rotary_complex(x, h, w, freqs), rtol=1e-5, atol=1e-5)


def test_mala_scores_sum_to_one_without_rotation():
    b, heads, n, d = 2, 3, 20, 8
    q, k = torch.randn(b, heads, n, d, dtype=torch.float64), torch.randn(b, heads, n, d, dtype=torch.float64)
    scores = mala_score_matrix(q, k, *identity_rope(n, d), d**-0.5)
    # sum_j = z / (z + 1e-6): one up to the release's stabiliser in 1 / (z + 1e-6)
    torch.testing.assert_close(scores.sum(-1), torch.ones(b, heads, n, dtype=torch.float64), rtol=0, atol=1e-5)
    assert (scores.sum(-1) - 1).abs().max() > 0  # the stabiliser is really there (not a copy of 1)


@pytest.mark.parametrize('rotate', [False, True])
def test_mala_linear_time_equals_explicit_eq13(rotate):
    b, heads, h, w, d = 2, 2, 4, 5, 8
    n, scale = h * w, d**-0.5
    q, k = torch.randn(2, b, heads, n, d, dtype=torch.float64)
    v = torch.randn(b, heads, n, d, dtype=torch.float64)
    if rotate:
        sin, cos = (t.double() for t in RotaryEmbedding2d(d * heads, heads)((h, w)))
        freqs = RotaryEmbedding2d(d * heads, heads).angle[::2]
        rq, rk = rotary_complex(phi(q), h, w, freqs), rotary_complex(phi(k), h, w, freqs)
    else:
        sin, cos = identity_rope(n, d)
        rq, rk = phi(q), phi(k)
    explicit = mala_scores(phi(q), phi(k), rq, rk, scale) @ v
    torch.testing.assert_close(mala_attention(q, k, v, sin, cos, scale).double(), explicit, rtol=1e-5, atol=1e-6)


def test_mala_magnitude_sharpens_linear_attention_does_not():
    """Eq. 10-12 vs Eq. 7: scaling phi(q) by a > 1 raises MALA's max/min score ratio
    (where all of a query's scores are positive) and leaves linear attention's unchanged."""
    n, d = 16, 8
    # small phi(q) (z < 1), so that at a = 1 most queries have only positive scores
    q0 = torch.randn(1, 1, n, d, dtype=torch.float64) - 2.5
    k = 0.5 * torch.randn(1, 1, n, d, dtype=torch.float64)
    sin, cos = identity_rope(n, d)
    ratios_mala, ratios_linear = [], []
    positive = torch.ones(n, dtype=torch.bool)
    for a in (1.0, 2.0, 4.0, 8.0):
        q = phi_inverse(a * phi(q0))
        torch.testing.assert_close(phi(q), a * phi(q0))
        s = mala_score_matrix(q, k, sin, cos, d**-0.5)[0, 0]
        lin = linear_attention_scores(phi(q), phi(k))[0, 0]
        ratios_mala.append(s.amax(-1) / s.amin(-1))
        ratios_linear.append(lin.amax(-1) / lin.amin(-1))
        positive &= (s > 0).all(-1)
    assert positive.sum() >= n // 4, 'random draw left too few all-positive queries'
    for lo, hi in zip(ratios_mala, ratios_mala[1:]):
        assert (hi[positive] > lo[positive]).all()
    for r in ratios_linear[1:]:
        torch.testing.assert_close(r, ratios_linear[0])


def test_mala_half_precision_is_finite_at_large_magnitudes():
    q, k, v = torch.randn(3, 1, 1, 4096, 32) * 300
    sin, cos = identity_rope(4096, 32)
    out = mala_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), sin.float(), cos.float(), 32**-0.5)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


@pytest.mark.parametrize('regions', [False, True], ids=['all_keys', 'regions'])
def test_naive_scores_equal_the_scores_written_out_per_query(regions):
    """naive.mala_scores (the matrix form analysis and the drop-in use) against Eq. 13 written out one
    query at a time, over all keys and over Swin-style regions (each query sees its region's keys)."""
    from reference import region_mala
    n, d = 12, 8
    q, k, v = torch.randn(3, 2, n, d, dtype=torch.float64)
    allowed = None
    if regions:
        region = torch.tensor([0] * 5 + [1] * 3 + [2] * 4)
        allowed = (region[:, None] == region[None, :]).double()
    expected_out, expected = region_mala(q, k, v, d**-0.5, allowed)
    pq, pk = phi(q), phi(k)
    got = naive_scores(pq, pk, pq, pk, d**-0.5, allowed)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got @ v, expected_out, rtol=1e-10, atol=1e-12)


def test_op_backends_and_their_errors():
    q, k, v = torch.randn(3, 1, 2, 10, 8, dtype=torch.float64)
    # the op's defaults (no rotation, scale head_dim ** -0.5, 'auto') against Eq. 13 written out
    explicit = mala_scores(phi(q), phi(k), phi(q), phi(k), 8**-0.5) @ v
    torch.testing.assert_close(mala(q, k, v), explicit, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="backend must be one of \\('auto', 'naive', 'triton'\\)"):
        mala(q, k, v, backend='cuda')
    from mavit_mm.ops.mala import kernels_can_run
    if not kernels_can_run(q):
        with pytest.raises(RuntimeError, match="backend='triton' needs Triton and a CUDA tensor"):
            mala(q, k, v, backend='triton')
