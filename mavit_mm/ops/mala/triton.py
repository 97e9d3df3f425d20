"""MALA as fused Triton kernels, forward and backward.

Same math as :func:`.naive.mala_attention` (the oracle), per (batch, head) with
``phi(x) = ELU(x) + 1``, ``R = rot(phi(.))`` and ``s = head_dim ** -0.5``::

    kv = (s / N) R(k)^T v     km = mean_n phi(k_n)     vm = mean_n v_n          (pass 1, over keys)
    z_i = s phi(q_i) . km     out_i = (1 + 1 / (z_i + eps)) R(q_i) kv - z_i vm  (pass 2, per query)

Pass 1 reduces over the tokens in chunks (partial ``D x D`` sums, added up in fp32 by torch), pass 2
maps every query. The backward mirrors it: one pass over the queries writes ``dq`` and reduces
``dkv``, ``dkm``, ``dvm``; one pass over the keys writes ``dk`` and ``dv``. Every pass reads its
operands once in their storage dtype (bf16 / fp16 / fp32, any strides: the q/k/v views of the
``qkvo`` convolution's output are read in place, NCHW or channels-last) and computes in fp32, so
half precision never overflows in the long sums; nothing of size ``N`` is saved for backward
beyond q, k, v themselves.

The rotation acts on channel pairs ``(2t, 2t+1)``: ``R(x) = x cos + P(x) sin`` with
``P(x0, x1) = (-x1, x0)`` done in registers (reshape / split / join); its transpose is
``R^T(y) = y cos - P(y sin)``.

The entry point :func:`mala_attention_triton` is a ``torch.library`` custom op with its autograd
registered, so ``torch.compile`` treats it as one opaque node.

The token count is not a specialization key (``do_not_specialize``): an image size that is new to
the process reuses the kernels compiled for any other size instead of compiling its own variant.
"""
from typing import Callable, Dict, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.errors import OutOfResources

from .naive import EPS

# Launch configurations (tokens per tile, software-pipelining stages), fastest first. Shared memory
# per block differs between GPUs (227 KB on an H100, 99 KB on consumer cards) and between Triton
# releases; a kernel that does not fit raises OutOfResources before it runs and gets the next one.
# 128-wide tiles (MAViT-B/L) need more than 227 KB at (64, 3).
LAUNCH_CONFIGS: Tuple[Tuple[int, int], ...] = ((64, 3), (32, 2), (32, 1), (16, 1))
# programs per reduction pass, over (batch x heads) x chunks: enough to fill a large GPU
_TARGET_PROGRAMS = 512
# index into LAUNCH_CONFIGS that fitted, per (kernel, tile width, dtype, device)
_chosen: Dict[tuple, int] = {}


@triton.jit
def _phi(x):
    """ELU(x) + 1."""
    return tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))


@triton.jit
def _load_tile(base, offs_n, offs_d, stride_n, stride_d, mask):
    return tl.load(base + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _pairs(x, BLOCK: tl.constexpr, D: tl.constexpr):
    """``P(x)``: every channel pair ``(x0, x1)`` of a ``(BLOCK, D)`` tile becomes ``(-x1, x0)``."""
    x0, x1 = tl.split(tl.reshape(x, (BLOCK, D // 2, 2)))
    return tl.reshape(tl.join(-x1, x0), (BLOCK, D))


@triton.jit
def _rotate(x, sin, cos, BLOCK: tl.constexpr, D: tl.constexpr):
    """``R(x) = x cos + P(x) sin`` on a ``(BLOCK, D)`` tile."""
    return x * cos + _pairs(x, BLOCK, D) * sin


@triton.jit
def _rotate_t(y, sin, cos, BLOCK: tl.constexpr, D: tl.constexpr):
    """The transpose of :func:`_rotate`: ``R^T(y) = y cos - P(y sin)``."""
    return y * cos - _pairs(y * sin, BLOCK, D)


@triton.jit
def _batch_head(H):
    """``(bh, b, h)``: this program's (batch x heads) index, its batch and its head."""
    bh = tl.program_id(0)
    return bh, bh // H, bh % H


@triton.jit
def _store_partials(mat_ptr, vec_ptr, vec2_ptr, mat, vec, vec2, offs_d, D: tl.constexpr):
    """One reduction program's partial sums, a ``(D, D)`` and two ``(D,)``, at slot (bh, chunk)."""
    part = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(mat_ptr + part * D * D + offs_d[:, None] * D + offs_d[None, :], mat)
    tl.store(vec_ptr + part * D + offs_d, vec)
    tl.store(vec2_ptr + part * D + offs_d, vec2)


@triton.jit
def _load_reduced(mat_ptr, vec_ptr, vec2_ptr, bh, offs_d, D: tl.constexpr):
    """The summed ``(D, D)`` and two ``(D,)`` of one (batch, head)."""
    return (tl.load(mat_ptr + bh * D * D + offs_d[:, None] * D + offs_d[None, :]), tl.load(vec_ptr + bh * D + offs_d),
            tl.load(vec2_ptr + bh * D + offs_d))


@triton.jit(do_not_specialize=['N', 'chunk'])
def _mala_fwd_reduce(k_ptr, v_ptr, sin_ptr, cos_ptr, kv_ptr, ks_ptr, vs_ptr, N, H, chunk, skb, skh, skn, skd, svb, svh,
                     svn, svd, D: tl.constexpr, HD: tl.constexpr, BLOCK: tl.constexpr, ROPE: tl.constexpr,
                     PREC: tl.constexpr):
    """Partial sums over ``chunk`` tokens: ``R(k)^T v`` (D x D), ``sum phi(k)``, ``sum v``."""
    bh, b, h = _batch_head(H)
    s = tl.program_id(1)
    offs_d = tl.arange(0, D)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    kv = tl.zeros((D, D), dtype=tl.float32)
    ks = tl.zeros((D, ), dtype=tl.float32)
    vs = tl.zeros((D, ), dtype=tl.float32)
    start = s * chunk
    for n0 in range(start, start + chunk, BLOCK):
        offs_n = n0 + tl.arange(0, BLOCK)
        mask = (offs_n < N)[:, None] & (offs_d < HD)[None, :]
        pk = tl.where(mask, _phi(_load_tile(k_base, offs_n, offs_d, skn, skd, mask)), 0.0)
        v = _load_tile(v_base, offs_n, offs_d, svn, svd, mask)
        if ROPE:
            sin = _load_tile(sin_ptr, offs_n, offs_d, HD, 1, mask)
            cos = _load_tile(cos_ptr, offs_n, offs_d, HD, 1, mask)
            rk = _rotate(pk, sin, cos, BLOCK, D)
        else:
            rk = pk
        kv += tl.dot(tl.trans(rk), v, input_precision=PREC)
        ks += tl.sum(pk, axis=0)
        vs += tl.sum(v, axis=0)
    _store_partials(kv_ptr, ks_ptr, vs_ptr, kv, ks, vs, offs_d, D)


@triton.jit(do_not_specialize=['N'])
def _mala_fwd_apply(q_ptr, sin_ptr, cos_ptr, kv_ptr, km_ptr, vm_ptr, out_ptr, N, H, scale, sqb, sqh, sqn, sqd, sob, soh,
                    son, sod, D: tl.constexpr, HD: tl.constexpr, BLOCK: tl.constexpr, ROPE: tl.constexpr,
                    PREC: tl.constexpr, EPS: tl.constexpr):
    """``out = (1 + 1 / (z + eps)) R(q) kv - z vm`` for one block of queries."""
    bh, b, h = _batch_head(H)
    offs_n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, D)
    mask = (offs_n < N)[:, None] & (offs_d < HD)[None, :]
    q_base = q_ptr + b * sqb + h * sqh
    pq = tl.where(mask, _phi(_load_tile(q_base, offs_n, offs_d, sqn, sqd, mask)), 0.0)
    kv, km, vm = _load_reduced(kv_ptr, km_ptr, vm_ptr, bh, offs_d, D)
    z = scale * tl.sum(pq * km[None, :], axis=1)
    if ROPE:
        rq = _rotate(pq, _load_tile(sin_ptr, offs_n, offs_d, HD, 1, mask),
                     _load_tile(cos_ptr, offs_n, offs_d, HD, 1, mask), BLOCK, D)
    else:
        rq = pq
    out = tl.dot(rq, kv, input_precision=PREC) * (1.0 + 1.0 / (z + EPS))[:, None] - z[:, None] * vm[None, :]
    o_base = out_ptr + b * sob + h * soh
    tl.store(o_base + offs_n[:, None] * son + offs_d[None, :] * sod, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=['N', 'chunk'])
def _mala_bwd_queries(q_ptr, g_ptr, sin_ptr, cos_ptr, kv_ptr, km_ptr, vm_ptr, dq_ptr, dkv_ptr, dkm_ptr, dvm_ptr, N, H,
                      chunk, scale, sqb, sqh, sqn, sqd, sgb, sgh, sgn, sgd, sdb, sdh, sdn, sdd, D: tl.constexpr,
                      HD: tl.constexpr, BLOCK: tl.constexpr, ROPE: tl.constexpr, PREC: tl.constexpr, EPS: tl.constexpr):
    """Writes ``dq``; partial sums of ``dL/dkv``, ``dL/dkm`` and ``dL/dvm`` over ``chunk`` queries."""
    bh, b, h = _batch_head(H)
    s = tl.program_id(1)
    offs_d = tl.arange(0, D)
    q_base = q_ptr + b * sqb + h * sqh
    g_base = g_ptr + b * sgb + h * sgh
    dq_base = dq_ptr + b * sdb + h * sdh
    kv, km, vm = _load_reduced(kv_ptr, km_ptr, vm_ptr, bh, offs_d, D)
    dkv = tl.zeros((D, D), dtype=tl.float32)
    dkm = tl.zeros((D, ), dtype=tl.float32)
    dvm = tl.zeros((D, ), dtype=tl.float32)
    start = s * chunk
    for n0 in range(start, start + chunk, BLOCK):
        offs_n = n0 + tl.arange(0, BLOCK)
        mask = (offs_n < N)[:, None] & (offs_d < HD)[None, :]
        q = _load_tile(q_base, offs_n, offs_d, sqn, sqd, mask)
        g = _load_tile(g_base, offs_n, offs_d, sgn, sgd, mask)  # 0 where masked: adds nothing
        pq = tl.where(mask, _phi(q), 0.0)
        z = scale * tl.sum(pq * km[None, :], axis=1)
        if ROPE:
            sin = _load_tile(sin_ptr, offs_n, offs_d, HD, 1, mask)
            cos = _load_tile(cos_ptr, offs_n, offs_d, HD, 1, mask)
            rq = _rotate(pq, sin, cos, BLOCK, D)
        else:
            rq = pq
        inv = 1.0 / (z + EPS)
        a = 1.0 + inv
        u = tl.dot(rq, kv, input_precision=PREC)
        dz = -tl.sum(g * u, axis=1) * inv * inv - tl.sum(g * vm[None, :], axis=1)
        drq = a[:, None] * tl.dot(g, tl.trans(kv), input_precision=PREC)  # dL/dR(q)
        if ROPE:
            dpq = _rotate_t(drq, sin, cos, BLOCK, D)
        else:
            dpq = drq
        dpq += (dz * scale)[:, None] * km[None, :]
        dq = dpq * tl.where(q > 0, 1.0, pq)
        tl.store(dq_base + offs_n[:, None] * sdn + offs_d[None, :] * sdd, dq.to(dq_ptr.dtype.element_ty), mask=mask)
        dkv += tl.dot(tl.trans(rq * a[:, None]), g, input_precision=PREC)
        dkm += tl.sum((dz * scale)[:, None] * pq, axis=0)
        dvm -= tl.sum(z[:, None] * g, axis=0)
    _store_partials(dkv_ptr, dkm_ptr, dvm_ptr, dkv, dkm, dvm, offs_d, D)


@triton.jit(do_not_specialize=['N'])
def _mala_bwd_keys(k_ptr, v_ptr, sin_ptr, cos_ptr, dkv_ptr, dkm_ptr, dvm_ptr, dk_ptr, dv_ptr, N, H, kv_scale, skb, skh,
                   skn, skd, svb, svh, svn, svd, sdkb, sdkh, sdkn, sdkd, sdvb, sdvh, sdvn, sdvd, D: tl.constexpr,
                   HD: tl.constexpr, BLOCK: tl.constexpr, ROPE: tl.constexpr, PREC: tl.constexpr):
    """``dk`` and ``dv`` of one block of keys from the reduced ``dkv``, ``dkm / N``, ``dvm / N``."""
    bh, b, h = _batch_head(H)
    offs_n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, D)
    mask = (offs_n < N)[:, None] & (offs_d < HD)[None, :]
    k_base = k_ptr + b * skb + h * skh
    k = _load_tile(k_base, offs_n, offs_d, skn, skd, mask)
    v = _load_tile(v_ptr + b * svb + h * svh, offs_n, offs_d, svn, svd, mask)
    dkv, dkm, dvm = _load_reduced(dkv_ptr, dkm_ptr, dvm_ptr, bh, offs_d, D)
    pk = tl.where(mask, _phi(k), 0.0)
    drk = kv_scale * tl.dot(v, tl.trans(dkv), input_precision=PREC)
    if ROPE:
        sin = _load_tile(sin_ptr, offs_n, offs_d, HD, 1, mask)
        cos = _load_tile(cos_ptr, offs_n, offs_d, HD, 1, mask)
        rk = _rotate(pk, sin, cos, BLOCK, D)
        dpk = _rotate_t(drk, sin, cos, BLOCK, D)
    else:
        rk = pk
        dpk = drk
    dk = (dpk + dkm[None, :]) * tl.where(k > 0, 1.0, pk)
    dv = kv_scale * tl.dot(rk, dkv, input_precision=PREC) + dvm[None, :]
    tl.store(
        dk_ptr + b * sdkb + h * sdkh + offs_n[:, None] * sdkn + offs_d[None, :] * sdkd,
        dk.to(dk_ptr.dtype.element_ty),
        mask=mask)
    tl.store(
        dv_ptr + b * sdvb + h * sdvh + offs_n[:, None] * sdvn + offs_d[None, :] * sdvd,
        dv.to(dv_ptr.dtype.element_ty),
        mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers
def empty_like_heads(x: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An empty ``(B, heads, N, D)`` tensor stored in ``x``'s order: ``(B, heads, D, N)`` when x is
    token-contiguous (a view of an NCHW map), else ``(B, N, heads, D)`` (channels-last). Either way
    ``out.transpose(-2, -1).reshape(B, C, H, W)`` is then a view, in x's memory format."""
    b, h, n, d = x.shape
    kw = dict(dtype=dtype or x.dtype, device=x.device)
    if x.stride(-2) == 1 and n > 1:
        return torch.empty(b, h, d, n, **kw).transpose(-2, -1)
    return torch.empty(b, n, h, d, **kw).permute(0, 2, 1, 3)


def _precision(x: Tensor) -> str:
    # half-precision inputs: tf32 tensor cores (their error is far below bf16's); fp32: exact fp32
    return 'ieee' if x.dtype == torch.float32 or x.device.type != 'cuda' else 'tf32'


def _tile_width(head_dim: int) -> int:
    """Channels per tile: head_dim padded to a power of 2 (tl.arange), at least 16 (tl.dot); MAViT-B/L's
    head_dim 96 runs in 128-wide tiles with the extra channels masked."""
    return max(16, triton.next_power_of_2(head_dim))


def _chunks(bh: int, n: int, block: int) -> Tuple[int, int]:
    """(programs per (batch, head), tokens per program) of a reduction pass over ``block``-token tiles."""
    blocks = triton.cdiv(n, block)
    splits = max(1, min(blocks, triton.cdiv(_TARGET_PROGRAMS, bh)))
    per = triton.cdiv(blocks, splits)
    return triton.cdiv(blocks, per), per * block


def _launch(name: str, x: Tensor, tile: int, run: Callable[[int, int], None]) -> None:
    """``run(block, num_stages)`` with the first of :data:`LAUNCH_CONFIGS` that fits this GPU's shared
    memory, remembered per kernel ``name``, tile width, dtype and device."""
    key = (name, tile, x.dtype, x.device)
    i = _chosen.get(key, 0)
    while True:
        try:
            run(*LAUNCH_CONFIGS[i])
        except OutOfResources:
            if i + 1 == len(LAUNCH_CONFIGS):
                raise
            i += 1
            continue
        _chosen[key] = i
        return


def _rope_args(q: Tensor, sin: Optional[Tensor], cos: Optional[Tensor]) -> Tuple[Tensor, Tensor, bool]:
    if sin is None:
        return q, q, False  # unused pointers
    return sin.float().contiguous(), cos.float().contiguous(), True


def mala_forward(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                 scale: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward of MALA. Returns ``out`` (v's dtype, q's layout) and, for the backward, ``kv``
    (``(B*heads, T, T)``, scaled by ``s / N``), ``km`` and ``vm`` (``(B*heads, T)``), all fp32, with
    ``T`` the tile width (head_dim padded to a power of 2; the padding is zero)."""
    b, h, n, d = q.shape
    dp = _tile_width(d)
    sin, cos, rope = _rope_args(q, sin, cos)
    prec = _precision(v)
    f32 = dict(dtype=torch.float32, device=q.device)
    sums = []

    def reduce(block: int, stages: int) -> None:
        splits, chunk = _chunks(b * h, n, block)
        sums[:] = [
            torch.empty(b * h, splits, dp, dp, **f32),
            torch.empty(b * h, splits, dp, **f32),
            torch.empty(b * h, splits, dp, **f32)
        ]
        _mala_fwd_reduce[(b * h, splits)](
            k,
            v,
            sin,
            cos,
            *sums,
            n,
            h,
            chunk,
            *k.stride(),
            *v.stride(),
            D=dp,
            HD=d,
            BLOCK=block,
            ROPE=rope,
            PREC=prec,
            num_warps=4,
            num_stages=stages)

    _launch('fwd_reduce', v, dp, reduce)
    kv = sums[0].sum(1).mul_(scale / n)
    km = sums[1].sum(1).div_(n)
    vm = sums[2].sum(1).div_(n)
    out = empty_like_heads(q, v.dtype)
    _launch(
        'fwd_apply', v, dp, lambda block, stages: _mala_fwd_apply[(b * h, triton.cdiv(n, block))]
        (q,
         sin,
         cos,
         kv,
         km,
         vm,
         out,
         n,
         h,
         scale,
         *q.stride(),
         *out.stride(),
         D=dp,
         HD=d,
         BLOCK=block,
         ROPE=rope,
         PREC=prec,
         EPS=EPS,
         num_warps=4,
         num_stages=stages))
    return out, kv, km, vm


def mala_backward(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor], kv: Tensor, km: Tensor,
                  vm: Tensor, grad_out: Tensor, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` of MALA's output, each in its input's dtype and layout."""
    b, h, n, d = q.shape
    dp = _tile_width(d)
    sin, cos, rope = _rope_args(q, sin, cos)
    prec = _precision(v)
    f32 = dict(dtype=torch.float32, device=q.device)
    sums = []
    dq = empty_like_heads(q)

    def queries(block: int, stages: int) -> None:
        splits, chunk = _chunks(b * h, n, block)
        sums[:] = [
            torch.empty(b * h, splits, dp, dp, **f32),
            torch.empty(b * h, splits, dp, **f32),
            torch.empty(b * h, splits, dp, **f32)
        ]
        _mala_bwd_queries[(b * h, splits)](
            q,
            grad_out,
            sin,
            cos,
            kv,
            km,
            vm,
            dq,
            *sums,
            n,
            h,
            chunk,
            scale,
            *q.stride(),
            *grad_out.stride(),
            *dq.stride(),
            D=dp,
            HD=d,
            BLOCK=block,
            ROPE=rope,
            PREC=prec,
            EPS=EPS,
            num_warps=8,
            num_stages=stages)

    _launch('bwd_queries', v, dp, queries)
    dkv = sums[0].sum(1)
    dkm = sums[1].sum(1).div_(n)
    dvm = sums[2].sum(1).div_(n)
    dk = empty_like_heads(k)
    dv = empty_like_heads(v)
    _launch(
        'bwd_keys', v, dp, lambda block, stages: _mala_bwd_keys[(b * h, triton.cdiv(n, block))]
        (k,
         v,
         sin,
         cos,
         dkv,
         dkm,
         dvm,
         dk,
         dv,
         n,
         h,
         scale / n,
         *k.stride(),
         *v.stride(),
         *dk.stride(),
         *dv.stride(),
         D=dp,
         HD=d,
         BLOCK=block,
         ROPE=rope,
         PREC=prec,
         num_warps=8,
         num_stages=stages))
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------
# the custom op (autograd + torch.compile)
@torch.library.custom_op('mavit_mm::mala_fwd', mutates_args=())
def _mala_fwd_op(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                 scale: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return mala_forward(q, k, v, sin, cos, scale)


@_mala_fwd_op.register_fake
def _(q, k, v, sin, cos, scale):
    b, h, _, d = q.shape
    dp = _tile_width(d)
    f32 = dict(dtype=torch.float32, device=q.device)
    return (empty_like_heads(q, v.dtype), q.new_empty(b * h, dp, dp,
                                                      **f32), q.new_empty(b * h, dp,
                                                                          **f32), q.new_empty(b * h, dp, **f32))


@torch.library.custom_op('mavit_mm::mala_bwd', mutates_args=())
def _mala_bwd_op(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor], kv: Tensor, km: Tensor,
                 vm: Tensor, grad_out: Tensor, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    return mala_backward(q, k, v, sin, cos, kv, km, vm, grad_out, scale)


@_mala_bwd_op.register_fake
def _(q, k, v, sin, cos, kv, km, vm, grad_out, scale):
    return empty_like_heads(q), empty_like_heads(k), empty_like_heads(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, sin, cos, scale = inputs
    _, kv, km, vm = output
    ctx.save_for_backward(q, k, v, sin, cos, kv, km, vm)
    ctx.scale = scale


def _backward(ctx, grad_out, *_unused):
    q, k, v, sin, cos, kv, km, vm = ctx.saved_tensors
    dq, dk, dv = _mala_bwd_op(q, k, v, sin, cos, kv, km, vm, grad_out, ctx.scale)
    return dq, dk, dv, None, None, None


_mala_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def mala_attention_triton(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                          scale: float) -> Tensor:
    """MALA through the fused kernels; same arguments and result as :func:`.naive.mala_attention`
    (output in ``q``'s memory order)."""
    return _mala_fwd_op(q, k, v, sin, cos, float(scale))[0]
