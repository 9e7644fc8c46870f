"""The attention core's CPU kernel: the same result as ops.attention_core and attention_core_backward (the
attention between the q/k/v and output projections), in blocks of images on every core.

What it does differently, and why it is faster:
- the (B, H, T, T) scores are the biggest arrays of a block; the kernel takes a few images at a
  time through scores, mask, softmax and A v while their scores are in cache, the blocks on all
  cores at once (blocks.py), instead of materialising each step for the whole batch;
- A v is written straight into the heads' (B, T, H, Dh) layout (`out=` a transposed view), so the
  output projection reads it without a transposing copy;
- the backward writes dq, dk, dv straight into one (B, T, 3, H, Dh) buffer, the layout of the
  q/k/v projection's output, so that projection's backward is one matmul with no concatenation.

- causal attention (iGPT's) is done in blocks of query rows: the block of queries r0 ≤ i < r1 needs
  the keys before r1 only, so the scores, softmax and A v of the keys after it, all masked to zero,
  are never computed: at T = 256 in blocks of 64 that is 5/8 of the work of the full T × T (1/2 as
  the blocks shrink); the weights above the diagonal are written as the zeros they are.

Relative attention (a bias on the scores) it leaves to the op: it returns NotImplemented for it.

The blocks run on the pool's threads only while each head's (T × Dh) · (Dh × T) products are small
(T²·Dh < 2¹⁹, as for the ViT's 65 tokens). Bigger products OpenBLAS spreads over the cores itself,
and two pool threads calling it at once make its threads contend: at iGPT's 256 tokens the pooled
blocks ran 5× slower than the plain op (2 cores, OpenBLAS 0.3.31, measured), one after another
they run faster than it.
"""

import numpy as np

from .blocks import map_blocks
from .softmax import softmax_rows, softmax_rows_backward

_POOLED_PRODUCTS_BELOW = 1 << 19  # T²·Dh multiply-adds per head product; see the module docstring
_QUERY_ROWS = 64  # causal: queries per block; the keys after a block's last query are skipped


def _query_blocks(t):
    """(r0, r1) of each block of causal queries: the block sees keys 0 ... r1 - 1."""
    return [(r0, min(r0 + _QUERY_ROWS, t)) for r0 in range(0, t, _QUERY_ROWS)]


def attention_core(qkv, causal, bias=None):
    """Same signature and result as ops.attention_core."""
    if bias is not None:
        return NotImplemented
    q, k, v = qkv  # each (B, H, T, Dh)
    _, b, num_heads, t, dh = qkv.shape
    scale = dh**-0.5
    attn = np.empty((b, num_heads, t, t), dtype=qkv.dtype)
    heads = np.empty((b, t, num_heads, dh), dtype=qkv.dtype)  # the heads side by side: [SA_1; ...; SA_H]
    future = np.triu(np.full((_QUERY_ROWS, _QUERY_ROWS), -np.inf, dtype=qkv.dtype), k=1)  # within a diagonal block

    def images(i):  # a block of the batch, in cache from scores to output
        if not causal:
            scores = q[i] @ k[i].swapaxes(-1, -2)  # (b, H, T, T)
            scores *= scale
            softmax_rows(scores.reshape(-1, t), attn[i].reshape(-1, t))
            np.matmul(attn[i], v[i], out=heads[i].transpose(0, 2, 1, 3))  # (b, H, T, Dh)
            return
        for r0, r1 in _query_blocks(t):
            scores = q[i][:, :, r0:r1] @ k[i][:, :, :r1].swapaxes(-1, -2)  # (b, H, r1 - r0, r1): keys up to r1 only
            scores *= scale
            scores[..., r0:] += future[: r1 - r0, : r1 - r0]  # the diagonal block's future
            softmax_rows(scores.reshape(-1, r1), scores.reshape(-1, r1))
            attn[i][:, :, r0:r1, :r1] = scores
            attn[i][:, :, r0:r1, r1:] = 0
            np.matmul(scores, v[i][:, :, :r1], out=heads[i][:, r0:r1].transpose(0, 2, 1, 3))

    map_blocks(images, b, num_heads * t * t * qkv.itemsize, parallel=t * t * dh < _POOLED_PRODUCTS_BELOW)
    return attn, heads.reshape(b, t, num_heads * dh)


def attention_core_backward(dheads, cache):
    """Same signature and result as ops.attention_core_backward."""
    if cache.rel is not None:
        return NotImplemented
    q, k, v = cache.qkv
    _, b, h, t, dh = cache.qkv.shape
    dheads = dheads.reshape(b, t, h, dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh), a view
    dqkv = np.empty((b, t, 3, h, dh), dtype=dheads.dtype)
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, Dh), views into dqkv

    def images(i):
        if not cache.causal:
            a = cache.attn[i]  # (b, H, T, T)
            np.matmul(a.swapaxes(-1, -2), dheads[i], out=dv[i])
            dscores = dheads[i] @ v[i].swapaxes(-1, -2)  # dA, then dS in place
            softmax_rows_backward(dscores.reshape(-1, t), a.reshape(-1, t), dscores.reshape(-1, t))
            dscores *= cache.scale
            np.matmul(dscores, k[i], out=dq[i])
            np.matmul(dscores.swapaxes(-1, -2), q[i], out=dk[i])
            return
        dk[i], dv[i] = 0, 0  # summed over the query blocks that see each key
        for r0, r1 in _query_blocks(t):
            a = np.ascontiguousarray(cache.attn[i][:, :, r0:r1, :r1])  # (b, H, r1 - r0, r1)
            dout_rows = dheads[i][:, :, r0:r1]
            dv[i][:, :, :r1] += a.swapaxes(-1, -2) @ dout_rows
            dscores = dout_rows @ v[i][:, :, :r1].swapaxes(-1, -2)  # dA, then dS in place
            softmax_rows_backward(dscores.reshape(-1, r1), a.reshape(-1, r1), dscores.reshape(-1, r1))
            dscores *= cache.scale
            np.matmul(dscores, k[i][:, :, :r1], out=dq[i][:, :, r0:r1])
            dk[i][:, :, :r1] += dscores.swapaxes(-1, -2) @ q[i][:, :, r0:r1]

    map_blocks(images, b, h * t * t * dheads.itemsize, parallel=t * t * dh < _POOLED_PRODUCTS_BELOW)
    return dqkv.reshape(b, t, 3 * h * dh), None
