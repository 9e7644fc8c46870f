"""Multi-head scaled dot-product self-attention (MSA, Eq. 5-8 of the paper's appendix)."""

from typing import NamedTuple

from ..backend import array_module, map_blocks
from .linear import linear_backward, linear_forward
from .softmax import softmax_rows, softmax_rows_backward


class AttentionCache(NamedTuple):
    """What the backward needs; `attn` (B, H, T, T) holds the attention weights A."""

    qkv: object  # (3, B, H, T, Dh) view of the projected q, k, v
    attn: object  # (B, H, T, T) softmax(q kᵀ / √Dh), rows sum to 1
    scale: float
    qkv_cache: tuple
    out_cache: tuple


def attention_forward(x, w_qkv, b_qkv, w_out, b_out, num_heads, causal=False):
    """
    x: (B, T, D)   w_qkv: (D, 3D) in [q | k | v] column blocks   b_qkv: (3D,)
    w_out: (D, D)   b_out: (D,)   num_heads: H, dividing D into heads of Dh = D / H
    causal: if True, token i attends only to tokens j ≤ i (for iGPT)
    returns out (B, T, D), cache (an AttentionCache; cache.attn are the weights)

        [q, k, v] = x U_qkv                    (Eq. 5)
        A = softmax(q kᵀ / √Dh)                (Eq. 6, per head)
        SA(x) = A v                            (Eq. 7)
        MSA(x) = [SA_1(x); ...; SA_H(x)] U_msa (Eq. 8)
    """
    xp = array_module(x)
    if x.ndim != 3:
        raise ValueError(f"attention expects x of shape (B, T, D), got {x.shape}")
    b, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"attention: width {d} is not divisible by {num_heads} heads")
    if w_qkv.shape != (d, 3 * d):
        raise ValueError(f"attention: w_qkv must have shape {(d, 3 * d)}, got {w_qkv.shape}")
    dh = d // num_heads
    scale = dh**-0.5

    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)  # (B, T, 3D)
    qkv = qkv.reshape(b, t, 3, num_heads, dh).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, Dh), a view
    q, k, v = qkv
    attn = xp.empty((b, num_heads, t, t), dtype=x.dtype)
    heads = xp.empty((b, t, num_heads, dh), dtype=x.dtype)  # the heads side by side: [SA_1; ...; SA_H]
    if causal:  # -inf on the future (j > i), 0 elsewhere: softmax then gives those weights 0
        future = xp.triu(xp.full((t, t), -xp.inf, dtype=x.dtype), k=1)

    def images(i):  # a block of the batch, in cache from scores to output
        scores = q[i] @ k[i].swapaxes(-1, -2)  # (b, H, T, T)
        scores *= scale
        if causal:
            scores += future
        softmax_rows(scores.reshape(-1, t), attn[i].reshape(-1, t))
        xp.matmul(attn[i], v[i], out=heads[i].transpose(0, 2, 1, 3))  # (b, H, T, Dh)

    map_blocks(images, b, num_heads * t * t * x.itemsize, xp)
    out, out_cache = linear_forward(heads.reshape(b, t, d), w_out, b_out)
    return out, AttentionCache(qkv, attn, scale, qkv_cache, out_cache)


def attention_backward(dout, cache):
    """
    dout: (B, T, D)
    returns dx (B, T, D), dw_qkv (D, 3D), db_qkv (3D,), dw_out (D, D), db_out (D,)

    Per head, with S = q kᵀ s (s = 1/√Dh), A = softmax(S), O = A v:
        dv = Aᵀ dO,   dA = dO vᵀ,   dS = softmax_backward(dA),
        dq = s dS k,  dk = s dSᵀ q
    Masked (causal) entries have A = 0, so their dS is 0 and no gradient leaks to the future.
    dq, dk, dv are written straight into one (B, T, 3, H, Dh) buffer, the layout of the
    projection's output, so the q/k/v projection's backward is one matmul.
    """
    q, k, v = cache.qkv
    _, b, h, t, dh = cache.qkv.shape
    xp = array_module(dout)

    dheads, dw_out, db_out = linear_backward(dout, cache.out_cache)  # (B, T, D)
    dheads = dheads.reshape(b, t, h, dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh), a view
    dqkv = xp.empty((b, t, 3, h, dh), dtype=dout.dtype)
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, Dh), views into dqkv

    def images(i):
        a = cache.attn[i]  # (b, H, T, T)
        xp.matmul(a.swapaxes(-1, -2), dheads[i], out=dv[i])
        dscores = dheads[i] @ v[i].swapaxes(-1, -2)  # dA, then dS in place
        softmax_rows_backward(dscores.reshape(-1, t), a.reshape(-1, t), dscores.reshape(-1, t))
        dscores *= cache.scale
        xp.matmul(dscores, k[i], out=dq[i])
        xp.matmul(dscores.swapaxes(-1, -2), q[i], out=dk[i])

    map_blocks(images, b, h * t * t * dout.itemsize, xp)
    dx, dw_qkv, db_qkv = linear_backward(dqkv.reshape(b, t, 3 * h * dh), cache.qkv_cache)
    return dx, dw_qkv, db_qkv, dw_out, db_out
