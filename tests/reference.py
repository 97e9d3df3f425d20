"""An independent, deliberately naive implementation of the release's MAViT formulation.

Written from the equations in the spec, not from mavit_mm: rotary encoding via complex
numbers, MALA via the explicit N x N score matrix of the paper's Eq. 13, softmax via an
explicit softmax. It reads a state dict in the release's key layout and runs a forward.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def phi(x: Tensor) -> Tensor:
    return F.elu(x) + 1


def rotary_complex(x: Tensor, h: int, w: int, freqs: Tensor) -> Tensor:
    """Rotate x ``(..., h*w, d)``: channel pair p turns by row*f_p (first half) or col*f_p."""
    d = x.shape[-1]
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)  # token -> row
    cols = torch.arange(w, dtype=torch.float64).repeat(h)  # token -> col
    f = freqs.double()
    theta = torch.cat([rows[:, None] * f, cols[:, None] * f], dim=-1)  # (N, d/2)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(theta), theta)).flatten(-2)


def mala_scores(pq: Tensor, pk: Tensor, rq: Tensor, rk: Tensor, scale: float) -> Tensor:
    """Eq. 13's N x N scores: beta_i s rq_i.rk_j / N - gamma_i / N, beta = 1 + 1/z, gamma = z."""
    n = pq.shape[-2]
    z = scale * (pq @ pk.mean(-2, keepdim=True).transpose(-1, -2))  # (..., N, 1)
    return (1 + 1 / (z + EPS)) * scale * (rq @ rk.transpose(-1, -2)) / n - z / n


def region_mala(q: Tensor, k: Tensor, v: Tensor, scale: float, allowed: Tensor = None):
    """Eq. 13 over the keys each query may see (``allowed`` 0/1 ``(N, N)``; all by default), written
    out per query: ``(output, scores)``, no rotation."""
    pq, pk, v = phi(q.double()), phi(k.double()), v.double()
    n = pq.shape[-2]
    allowed = torch.ones(n, n, dtype=torch.double) if allowed is None else allowed.double()
    rows = []
    for i in range(n):  # one query at a time, over its m visible keys
        keys = allowed[i].bool()
        m = int(keys.sum())
        z = scale * (pq[..., i, :] * pk[..., keys, :].mean(-2)).sum(-1)[..., None]
        dots = (pk[..., keys, :] * pq[..., i:i + 1, :]).sum(-1)
        row = torch.zeros(*pq.shape[:-2], n, dtype=torch.double)
        row[..., keys] = (1 + 1 / (z + EPS)) * scale * dots / m - z / m
        rows.append(row)
    scores = torch.stack(rows, dim=-2)
    return scores @ v, scores


def linear_attention_scores(pq: Tensor, pk: Tensor) -> Tensor:
    """Plain linear attention (Eq. 7): phi(q_i).phi(k_j) / sum_j phi(q_i).phi(k_j)."""
    s = pq @ pk.transpose(-1, -2)
    return s / s.sum(-1, keepdim=True)


def softmax_scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    logits = scale * (q @ k.transpose(-1, -2))
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'], sd[p + '.bias'], False,
                        0.0, 1e-5)


def _conv(sd, p, x, stride=1, pad=0, groups=1):
    return F.conv2d(x, sd[p + '.weight'], sd[p + '.bias'], stride, pad, 1, groups)


def _ln2d(sd, p, x):
    mu = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * sd[p + '.weight'][:, None, None] + sd[p + '.bias'][:, None, None]


def _attention(sd, p, x, heads, kind, freqs):
    b, c, h, w = x.shape
    d = c // heads
    scale = d**-0.5
    qkvo = _conv(sd, p + '.qkvo', x)
    q, k, v, o = (qkvo[:, i * c:(i + 1) * c] for i in range(4))
    lepe = _conv(sd, p + '.lepe', v, pad=2, groups=c)
    to_heads = lambda t: t.reshape(b, heads, d, h * w).transpose(-1, -2).double()  # noqa: E731
    q, k, vh = to_heads(q), to_heads(k), to_heads(v)
    if kind == 'mala':
        pq, pk = phi(q), phi(k)
        a = mala_scores(pq, pk, rotary_complex(pq, h, w, freqs), rotary_complex(pk, h, w, freqs), scale)
    else:
        a = softmax_scores(rotary_complex(q, h, w, freqs), rotary_complex(k, h, w, freqs), scale)
    out = (a @ vh).to(x.dtype).transpose(-1, -2).reshape(b, c, h, w)
    return _conv(sd, p + '.proj', (out + lepe) * o)


def reference_forward(sd: Dict[str, Tensor],
                      x: Tensor,
                      depths: Sequence[int],
                      num_heads: Sequence[int],
                      kinds: Sequence[str],
                      out_norms: bool = True) -> List[Tensor]:
    """Outputs of all four stages of the release's backbone (through extra_norms if ``out_norms``)."""
    for i in range(4):
        x = _conv(sd, f'patch_embed.proj.{3 * i}', x, stride=2 if i in (0, 3) else 1, pad=1)
        x = _bn(sd, f'patch_embed.proj.{3 * i + 1}', x)
        if i < 3:
            x = F.gelu(x)
    outs = []
    for i, depth in enumerate(depths):
        freqs = sd[f'layers.{i}.RoPE.angle'][::2]
        c = x.shape[1]
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}'
            x = x + _conv(sd, p + '.pos', x, pad=1, groups=c)
            y = _attention(sd, p + '.attn', _ln2d(sd, p + '.norm1.norm', x), num_heads[i], kinds[i], freqs)
            x = x + sd[p + '.gamma_1'] * y
            y = F.gelu(_conv(sd, p + '.ffn.fc1', _ln2d(sd, p + '.norm2.norm', x)))
            y = y + _conv(sd, p + '.ffn.dwconv', y, pad=1, groups=y.shape[1])
            x = x + sd[p + '.gamma_2'] * _conv(sd, p + '.ffn.fc2', y)
        outs.append(_ln2d(sd, f'extra_norms.{i}.norm', x) if out_norms else x)
        if i + 1 < len(depths):
            x = _bn(sd, f'layers.{i}.downsample.norm', _conv(sd, f'layers.{i}.downsample.reduction', x, 2, 1))
    return outs


def release_key_layout(depths: Sequence[int], with_cls_head: bool = False) -> List[str]:
    """Every parameter / buffer key of the release's backbone, written out from the spec."""
    keys = []
    for i in (0, 3, 6, 9):
        keys += [f'patch_embed.proj.{i}.weight', f'patch_embed.proj.{i}.bias']
    for i in (1, 4, 7, 10):
        keys += [
            f'patch_embed.proj.{i}.{n}'
            for n in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
        ]
    for i, depth in enumerate(depths):
        keys.append(f'layers.{i}.RoPE.angle')
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}'
            keys += [
                f'{p}.{m}.{t}' for m in ('pos', 'norm1.norm', 'norm2.norm', 'attn.qkvo', 'attn.lepe', 'attn.proj',
                                         'ffn.fc1', 'ffn.dwconv', 'ffn.fc2') for t in ('weight', 'bias')
            ]
            keys += [f'{p}.gamma_1', f'{p}.gamma_2']
        if i < 3:
            keys += [f'layers.{i}.downsample.reduction.weight', f'layers.{i}.downsample.reduction.bias']
            keys += [
                f'layers.{i}.downsample.norm.{n}'
                for n in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
            ]
    if with_cls_head:
        keys += ['proj.weight', 'proj.bias', 'head.weight', 'head.bias']
        keys += [f'norm.{n}' for n in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')]
    else:
        keys += [f'extra_norms.{i}.norm.{t}' for i in range(4) for t in ('weight', 'bias')]
    return keys


def reference_cls_logits(sd: Dict[str, Tensor], x: Tensor, depths: Sequence[int], num_heads: Sequence[int]) -> Tensor:
    """Logits of the release's ImageNet model: stage 4, proj, BN, swish, mean, head."""
    feat = reference_forward(sd, x, depths, num_heads, ['mala', 'mala', 'softmax', 'softmax'], False)[-1]
    y = _bn(sd, 'norm', _conv(sd, 'proj', feat))
    y = (y * torch.sigmoid(y)).mean(dim=(2, 3), keepdim=True)
    return _conv(sd, 'head', y).flatten(1)
