"""Attention scores of softmax, plain linear attention and MALA, explicitly, for a few queries.

Used by tools/analysis_tools/visualize_attention.py. MALA's scores are formed only for the chosen queries
(rows of the N x N matrix), never the whole matrix.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from mavit_mm.models.layers import MALAttention, RoPESoftmaxAttention
from mavit_mm.ops.mala.naive import mala_scores, phi
from mavit_mm.ops.rotary import apply_rotary


def scaled_query_scores(q: Tensor, k: Tensor, scales: Sequence[float] = (1, 2, 4, 8)) -> Dict[str, Tensor]:
    """Scores of one query against N keys as the query's magnitude grows (the paper's Fig. 2).

    Softmax scales the query ``q``; linear attention and MALA scale ``phi(q)``, as the paper's Eq. 7 / 10-12.

    Args:
        q (Tensor): ``(d,)``. k (Tensor): ``(N, d)``.
        scales: The factors ``a``.

    Returns:
        dict[str, Tensor]: ``softmax``, ``linear``, ``mala``: each ``(len(scales), N)``; every row sums to 1.
    """
    q, k = q.double(), k.double()
    n, d = k.shape
    s = d**-0.5
    out: Dict[str, List[Tensor]] = {'softmax': [], 'linear': [], 'mala': []}
    for a in scales:
        out['softmax'].append(torch.softmax(s * (a * q) @ k.T, dim=-1))
        pq, pk = a * phi(q)[None], phi(k)
        dots = pq @ pk.T
        out['linear'].append((dots / dots.sum())[0])
        out['mala'].append(mala_scores(pq, pk, pq, pk, s)[0])
    return {name: torch.stack(rows) for name, rows in out.items()}


def top_bottom_ratio(scores: Tensor) -> Tensor:
    """Highest over lowest score of each row (meaningful where all scores are positive)."""
    return scores.amax(-1) / scores.amin(-1)


def block_scores(attn: nn.Module, x: Tensor, rope: Tuple[Tensor, Tensor], queries: Sequence[int]) -> Tensor:
    """Attention scores of a MAViT attention module for the token indices ``queries``.

    Args:
        attn: A :class:`MALAttention` or :class:`RoPESoftmaxAttention`.
        x (Tensor): Its input (after ``norm1``), ``(1, C, H, W)``.
        rope: The stage's ``(sin, cos)``.
        queries: Row-major token indices ``h * W + w``.

    Returns:
        Tensor: ``(len(queries), heads, H * W)``; for softmax each row sums to 1, for MALA it does up to
        the rotation.
    """
    q, k, _, _ = attn.qkvo(x).chunk(4, dim=1)
    q, k = attn.split_heads(q)[0].double(), attn.split_heads(k)[0].double()  # (heads, N, d)
    sin, cos = (t.double() for t in rope)
    idx = torch.as_tensor(list(queries))
    if isinstance(attn, MALAttention):
        pq, pk = phi(q), phi(k)
        scores = mala_scores(pq[:, idx], pk, apply_rotary(pq, sin, cos)[:, idx], apply_rotary(pk, sin, cos), attn.scale)
    elif isinstance(attn, RoPESoftmaxAttention):
        rq = apply_rotary(q, sin, cos)[:, idx]
        rk = apply_rotary(k, sin, cos)
        scores = torch.softmax(attn.scale * rq @ rk.transpose(1, 2), dim=-1)
    else:
        raise TypeError(f'not a MAViT attention: {type(attn).__name__}')
    return scores.transpose(0, 1).float()


@torch.no_grad()
def capture_attention_input(backbone: nn.Module, image: Tensor, stage: int,
                            block: int) -> Tuple[nn.Module, Tensor, Tuple[Tensor, Tensor]]:
    """Run ``backbone`` on ``image`` and return block ``(stage, block)``'s attention, input and rope."""
    if not 0 <= stage < len(backbone.layers) or not 0 <= block < len(backbone.layers[stage].blocks):
        depths = [len(s.blocks) for s in backbone.layers]
        raise ValueError(f'no block ({stage}, {block}): stages have depths {depths}')
    attn = backbone.layers[stage].blocks[block].attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, args: seen.update(x=args[0], rope=args[1]))
    try:
        backbone(image)
    finally:
        handle.remove()
    return attn, seen['x'], seen['rope']


@torch.no_grad()
def negative_score_stats(attn: nn.Module, x: Tensor, rope: Tuple[Tensor, Tensor], chunk: int = 512) -> Dict[str, float]:
    """Count MALA's negative attention scores over the whole ``N x N`` matrix, a chunk of queries at a time.

    Without rotation MALA's scores are positive; the rotary encoding can make ``rot(q) . rot(k)`` and
    so a score negative (the paper's caveat). Returns ``negative``, ``total`` and the ``min`` score.
    """
    n = x.shape[-2] * x.shape[-1]
    negative, lowest = 0, float('inf')
    for start in range(0, n, chunk):
        scores = block_scores(attn, x[:1], rope, range(start, min(n, start + chunk)))
        negative += int((scores < 0).sum())
        lowest = min(lowest, float(scores.min()))
    return {'negative': negative, 'total': n * n * attn.num_heads, 'min': lowest}
