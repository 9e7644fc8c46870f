"""The attention core's CPU kernel: the same result as ops.attention, in blocks of images on every core.

What it does differently, and why it is faster:
- the (B, H, T, T) scores are the biggest arrays of a block; the kernel takes a few images at a
  time through scores, mask, softmax and A v while their scores are in cache, the blocks on all
  cores at once (blocks.py), instead of materialising each step for the whole batch;
- A v is written straight into the heads' (B, T, H, Dh) layout (`out=` a transposed view), so the
  output projection reads it without a transposing copy;
- the backward writes dq, dk, dv straight into one (B, T, 3, H, Dh) buffer, the layout of the
  q/k/v projection's output, so that projection's backward is one matmul with no concatenation.

The blocks run on the pool's threads only while each head's (T × Dh) · (Dh × T) products are small
(T²·Dh < 2¹⁹, as for the ViT's 65 tokens). Bigger products OpenBLAS spreads over the cores itself,
and two pool threads calling it at once make its threads contend: at iGPT's 256 tokens the pooled
blocks ran 5× slower than the plain op (2 cores, OpenBLAS 0.3.31, measured), one after another
they run faster than it.
"""

import numpy as np

from ..ops import attention as op
from ..ops.linear import linear_backward, linear_forward
from .blocks import map_blocks
from .softmax import softmax_rows, softmax_rows_backward

_POOLED_PRODUCTS_BELOW = 1 << 19  # T²·Dh multiply-adds per head product; see the module docstring


def attention_forward(x, w_qkv, b_qkv, w_out, b_out, num_heads, causal=False, rel=None):
    """Same signature, result and cache as ops.attention_forward (relative attention: the op itself)."""
    if rel is not None:
        return op.attention_forward.__wrapped__(x, w_qkv, b_qkv, w_out, b_out, num_heads, causal, rel)
    b, t, d = op.attention_shapes(x, w_qkv, num_heads)
    dh = d // num_heads
    scale = dh**-0.5

    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)  # (B, T, 3D)
    qkv = qkv.reshape(b, t, 3, num_heads, dh).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, Dh), a view
    q, k, v = qkv
    attn = np.empty((b, num_heads, t, t), dtype=x.dtype)
    heads = np.empty((b, t, num_heads, dh), dtype=x.dtype)  # the heads side by side: [SA_1; ...; SA_H]
    if causal:
        future = np.triu(np.full((t, t), -np.inf, dtype=x.dtype), k=1)

    def images(i):  # a block of the batch, in cache from scores to output
        scores = q[i] @ k[i].swapaxes(-1, -2)  # (b, H, T, T)
        scores *= scale
        if causal:
            scores += future
        softmax_rows(scores.reshape(-1, t), attn[i].reshape(-1, t))
        np.matmul(attn[i], v[i], out=heads[i].transpose(0, 2, 1, 3))  # (b, H, T, Dh)

    map_blocks(images, b, num_heads * t * t * x.itemsize, parallel=t * t * dh < _POOLED_PRODUCTS_BELOW)
    out, out_cache = linear_forward(heads.reshape(b, t, d), w_out, b_out)
    return out, op.AttentionCache(qkv, attn, scale, qkv_cache, out_cache)


def attention_backward(dout, cache):
    """Same signature and result as ops.attention_backward (relative attention: the op itself)."""
    if cache.rel is not None:
        return op.attention_backward.__wrapped__(dout, cache)
    q, k, v = cache.qkv
    _, b, h, t, dh = cache.qkv.shape

    dheads, dw_out, db_out = linear_backward(dout, cache.out_cache)  # (B, T, D)
    dheads = dheads.reshape(b, t, h, dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh), a view
    dqkv = np.empty((b, t, 3, h, dh), dtype=dout.dtype)
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, Dh), views into dqkv

    def images(i):
        a = cache.attn[i]  # (b, H, T, T)
        np.matmul(a.swapaxes(-1, -2), dheads[i], out=dv[i])
        dscores = dheads[i] @ v[i].swapaxes(-1, -2)  # dA, then dS in place
        softmax_rows_backward(dscores.reshape(-1, t), a.reshape(-1, t), dscores.reshape(-1, t))
        dscores *= cache.scale
        np.matmul(dscores, k[i], out=dq[i])
        np.matmul(dscores.swapaxes(-1, -2), q[i], out=dk[i])

    map_blocks(images, b, h * t * t * dout.itemsize, parallel=t * t * dh < _POOLED_PRODUCTS_BELOW)
    dx, dw_qkv, db_qkv = linear_backward(dqkv.reshape(b, t, 3 * h * dh), cache.qkv_cache)
    return dx, dw_qkv, db_qkv, dw_out, db_out
