"""tools/analysis_tools/visualize_attention.py: the plotted numbers obey the paper's claims; both modes draw."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from mavit_mm.analysis.attention_scores import block_scores, scaled_query_scores, top_bottom_ratio
from mavit_mm.models.layers import MALAttention, RoPESoftmaxAttention, RotaryEmbedding2d
from helpers import ROOT


@pytest.mark.parametrize('seed', range(5))
def test_curves_obey_the_papers_claims(seed):
    g = torch.Generator().manual_seed(seed)
    q = 0.5 * torch.randn(32, generator=g) - 3.0  # the tool's defaults
    k = 0.3 * torch.randn(64, 32, generator=g)
    scores = scaled_query_scores(q, k, (1, 2, 4, 8))
    for rows in scores.values():
        torch.testing.assert_close(rows.sum(-1), torch.ones(4, dtype=rows.dtype), atol=1e-5, rtol=0)
    assert (scores['mala'] > 0).all()
    lin, mala, soft = (top_bottom_ratio(scores[n]) for n in ('linear', 'mala', 'softmax'))
    torch.testing.assert_close(lin, lin[:1].expand(4))  # Eq. 7: invariant to a
    assert (mala[1:] > mala[:-1]).all()  # Eq. 10-12: sharper as a grows
    assert (soft[1:] > soft[:-1]).all() and soft[-1] / soft[0] > mala[-1] / mala[0]  # softmax faster


@pytest.mark.parametrize('cls', [MALAttention, RoPESoftmaxAttention])
def test_block_score_rows_reproduce_the_attention_output(cls):
    """Rows formed explicitly for a few queries, applied to v, give the module's own (linear-time for
    MALA, SDPA for softmax) output for those queries."""
    attn = cls(32, 2).eval()
    x = torch.randn(1, 32, 6, 7)
    rope = RotaryEmbedding2d(32, 2)((6, 7))
    queries = [0, 9, 41]
    rows = block_scores(attn, x, rope, queries)  # (Q, heads, N)
    q, k, v, _ = attn.qkvo(x).chunk(4, dim=1)
    with torch.no_grad():
        full = attn.attend(attn.split_heads(q), attn.split_heads(k), attn.split_heads(v), *rope)[0]
        vh = attn.split_heads(v)[0]  # (heads, N, d)
        explicit = torch.einsum('qhn,hnd->hqd', rows, vh)
    torch.testing.assert_close(explicit, full[:, queries], rtol=1e-4, atol=1e-5)
    if cls is RoPESoftmaxAttention:
        torch.testing.assert_close(rows.sum(-1), torch.ones(3, 2))


def run_tool(*args):
    return subprocess.run([sys.executable, 'tools/analysis_tools/visualize_attention.py', *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


def test_curves_mode_writes_png(tmp_path):
    out = run_tool('curves', '--out', str(tmp_path / 'c.png'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / 'c.png').stat().st_size > 10000
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (['1'], ['8'])]
    (a1, soft1, lin1, mala1), (a8, soft8, lin8, mala8) = [[float(v) for v in r] for r in rows]
    assert lin1 == lin8 and mala8 > mala1 and soft8 / soft1 > mala8 / mala1


@pytest.mark.parametrize('stage,block,kind', [(1, 1, 'MALA'), (2, 3, 'softmax')])
def test_map_mode_on_random_weights(tmp_path, stage, block, kind):
    import cv2
    image = tmp_path / 'img.png'
    cv2.imwrite(str(image), (np.random.default_rng(0).random((96, 120, 3)) * 255).astype(np.uint8))
    out = run_tool('map', 'configs/toy/upernet_mavit-t_toy.py', '--image', str(image), '--size', '96', '--stage',
                   str(stage), '--block', str(block), '--query', '10', '20', '--query', '80', '100', '--out',
                   str(tmp_path / 'm.png'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / 'm.png').stat().st_size > 5000
    assert out.stdout.count('query (') == 2
    if kind == 'softmax':
        assert out.stdout.count('sum 1.0000') == 2


def test_map_mode_names_a_missing_block(tmp_path):
    import cv2
    image = tmp_path / 'img.png'
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    out = run_tool('map', 'configs/toy/upernet_mavit-t_toy.py', '--image', str(image), '--stage', '0', '--block', '5',
                   '--query', '1', '1', '--out', str(tmp_path / 'm.png'))
    assert out.returncode != 0 and 'no block (0, 5): stages have depths [2, 2, 6, 2]' in out.stderr
