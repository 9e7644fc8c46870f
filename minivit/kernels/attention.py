"""The attention core's CPU kernel: the same result as ops.attention_core and attention_core_backward (the
attention between the q/k/v and output projections), in blocks of images on every core.

What it does differently, and why it is faster:
- the (B, H, T, T) scores are the biggest arrays of a block; the kernel takes a few images at a
  time through scores, mask, softmax and A v while their scores are in cache, the blocks on all
  cores at once (blocks.py), instead of materialising each step for the whole batch;
- A v is written straight into the heads' (B, T, H, Dh) layout (`out=` a transposed view), so the
  output projection reads it without a transposing copy;
- the backward writes dq, dk, dv straight into one (B, T, 3, H, Dh) buffer, the layout of the
  q/k/v projection's output, so that projection's backward is one matmul with no concatenation;
- the causal mask (iGPT's) is added to each block's scores in place from one (T, T) array.

Causal attention computes the whole T × T, masked half included. Skipping the blocks of keys after
each block of queries does 5/8 of the work at T = 256 in blocks of 64 queries, but as more, smaller
products: with one BLAS thread per image, the whole T × T was faster (at iGPT's B 128, T 256, 4 heads
of 32, 2 cores: 142 ms for the core's forward and backward, against 157 ms skipping in blocks of 128
queries and 176 ms in blocks of 64; measured).

Relative attention (a bias on the scores) it leaves to the op: it returns NotImplemented for it.
"""

import numpy as np

from .blocks import map_blocks
from .softmax import softmax_rows, softmax_rows_backward


def attention_core(qkv, causal, bias=None):
    """Same signature and result as ops.attention_core."""
    if bias is not None:
        return NotImplemented
    q, k, v = qkv  # each (B, H, T, Dh)
    _, b, num_heads, t, dh = qkv.shape
    scale = dh**-0.5
    attn = np.empty((b, num_heads, t, t), dtype=qkv.dtype)
    heads = np.empty((b, t, num_heads, dh), dtype=qkv.dtype)  # the heads side by side: [SA_1; ...; SA_H]
    future = np.triu(np.full((t, t), -np.inf, dtype=qkv.dtype), k=1) if causal else None

    def images(i):  # a block of the batch, in cache from scores to output
        scores = q[i] @ k[i].swapaxes(-1, -2)  # (b, H, T, T)
        scores *= scale
        if causal:
            scores += future
        softmax_rows(scores.reshape(-1, t), attn[i].reshape(-1, t))
        np.matmul(attn[i], v[i], out=heads[i].transpose(0, 2, 1, 3))  # (b, H, T, Dh)

    map_blocks(images, b, num_heads * t * t * qkv.itemsize, matmuls=True)
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

    def images(i):  # masked (causal) weights are 0, so their dS is 0: no branch needed
        a = cache.attn[i]  # (b, H, T, T)
        np.matmul(a.swapaxes(-1, -2), dheads[i], out=dv[i])
        dscores = dheads[i] @ v[i].swapaxes(-1, -2)  # dA, then dS in place
        softmax_rows_backward(dscores.reshape(-1, t), a.reshape(-1, t), dscores.reshape(-1, t))
        dscores *= cache.scale
        np.matmul(dscores, k[i], out=dq[i])
        np.matmul(dscores.swapaxes(-1, -2), q[i], out=dk[i])

    map_blocks(images, b, h * t * t * dheads.itemsize, matmuls=True)
    return dqkv.reshape(b, t, 3 * h * dh), None
