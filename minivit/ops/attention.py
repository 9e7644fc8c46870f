"""Multi-head scaled dot-product self-attention (MSA, Eq. 5-8 of the paper's appendix), optionally with
1-D relative position attention (Appendix D.4)."""

from typing import NamedTuple

from ..backend import array_module
from ..kernels import accelerated
from ..kernels import attention as kernel
from .linear import linear_backward, linear_forward
from .softmax import softmax_backward, softmax_forward


class AttentionCache(NamedTuple):
    """What the backward needs; `attn` (B, H, T, T) holds the attention weights A."""

    qkv: object  # (3, B, H, T, Dh) view of the projected q, k, v
    attn: object  # (B, H, T, T) softmax(q kᵀ / √Dh), rows sum to 1
    scale: float
    qkv_cache: tuple
    out_cache: tuple
    rel: object = None  # relative attention: (its keys per head (H, 2T - 1, Dh), offset index (T, T)), else None


def attention_shapes(x, w_qkv, num_heads):
    """(B, T, D) of a valid attention input, or a ValueError saying what was expected."""
    if x.ndim != 3:
        raise ValueError(f"attention expects x of shape (B, T, D), got {x.shape}")
    b, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"attention: width {d} is not divisible by {num_heads} heads")
    if w_qkv.shape != (d, 3 * d):
        raise ValueError(f"attention: w_qkv must have shape {(d, 3 * d)}, got {w_qkv.shape}")
    return b, t, d


def split_heads(qkv, num_heads):
    """(B, T, 3D) projections in [q | k | v] blocks -> (3, B, H, T, Dh): q, k, v per head, a view."""
    b, t, d3 = qkv.shape
    return qkv.reshape(b, t, 3, num_heads, d3 // (3 * num_heads)).transpose(2, 0, 3, 1, 4)


def merge_heads(heads):
    """(B, H, T, Dh) -> (B, T, D): the heads' outputs side by side, [SA_1; ...; SA_H]."""
    b, h, t, dh = heads.shape
    return heads.transpose(0, 2, 1, 3).reshape(b, t, h * dh)


def attend(q, k, v, causal, bias=None):
    """Scaled dot-product attention of each head (Eq. 6-7).

    q: (B, H, Tq, Dh)   k, v: (B, H, Tk, Dh), Tk ≥ Tq; causal: the queries are the last Tq of the Tk
    positions, and each sees only keys at its own position or before; bias: (B, H, Tq, Tk) added to
    the scaled logits before the softmax (relative attention's), or None
    returns attn (B, H, Tq, Tk), out = attn v (B, H, Tq, Dh)
    """
    xp = array_module(q)
    tq, tk = q.shape[2], k.shape[2]
    scores = q @ k.swapaxes(-1, -2) * q.shape[-1] ** -0.5  # (B, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    if causal:  # -inf on the future (key j after query i's position tk - tq + i): weight 0 after softmax
        scores = scores + xp.triu(xp.full((tq, tk), -xp.inf, dtype=q.dtype), k=tk - tq + 1)
    attn, _ = softmax_forward(scores)  # each row sums to 1
    return attn, attn @ v


def relative_offsets(t, xp):
    """(T, T) int: entry [i, j] = i - j + T - 1, the row of the relative keys for query i and key j
    (offsets -(T - 1) ... T - 1 stored from 0 to 2T - 2)."""
    positions = xp.arange(t)
    return positions[:, None] - positions[None, :] + t - 1


def attention_forward(x, w_qkv, b_qkv, w_out, b_out, num_heads, causal=False, rel=None):
    """
    x: (B, T, D)   w_qkv: (D, 3D) in [q | k | v] column blocks   b_qkv: (3D,)
    w_out: (D, D)   b_out: (D,)   num_heads: H, dividing D into heads of Dh = D / H
    causal: if True, token i attends only to tokens j ≤ i (for iGPT)
    rel: (2T - 1, D) or None: relative attention's keys, one per offset i - j, split into heads like k
    returns out (B, T, D), cache (an AttentionCache; cache.attn are the weights)

        [q, k, v] = x U_qkv                    (Eq. 5)
        A = softmax(q kᵀ / √Dh + R)            (Eq. 6, per head; R = 0 without rel)
        SA(x) = A v                            (Eq. 7)
        MSA(x) = [SA_1(x); ...; SA_H(x)] U_msa (Eq. 8)

    Relative attention (Appendix D.4): "an extra attention" of the same queries against one learned
    key per offset between query and key position, R_ij = q_i · rel_{i-j} / √Dh, added as a bias.
    """
    xp = array_module(x)
    _, t, d = attention_shapes(x, w_qkv, num_heads)
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)  # (B, T, 3D)
    qkv = split_heads(qkv, num_heads)  # (3, B, H, T, Dh)
    scale = qkv.shape[-1] ** -0.5
    bias = rel_cache = None
    if rel is not None:
        if rel.shape != (2 * t - 1, d):
            raise ValueError(f"attention: rel must have shape {(2 * t - 1, d)} (one key per offset), got {rel.shape}")
        rel_keys = rel.reshape(2 * t - 1, num_heads, d // num_heads).transpose(1, 0, 2)  # (H, 2T - 1, Dh)
        rows, offsets = xp.arange(t)[:, None], relative_offsets(t, xp)  # index [i, i - j + T - 1] for each (i, j)
        per_offset = qkv[0] @ rel_keys.swapaxes(-1, -2)  # (B, H, T, 2T - 1): q_i · rel_o for every offset o
        bias = per_offset[:, :, rows, offsets] * scale  # (B, H, T, T): R_ij = q_i · rel_{i-j} / √Dh
        rel_cache = (rel_keys, offsets)
    attn, heads = attention_core(qkv, causal, bias)  # (B, H, T, T), (B, T, D)
    out, out_cache = linear_forward(heads, w_out, b_out)
    return out, AttentionCache(qkv, attn, scale, qkv_cache, out_cache, rel_cache)


@accelerated(kernel.attention_core)
def attention_core(qkv, causal, bias=None):
    """The attention between the projections (Eq. 6-7 of every head): the part the CPU kernel speeds up.

    qkv: (3, B, H, T, Dh) q, k, v per head   causal, bias: as in attend
    returns attn (B, H, T, T), the heads' outputs side by side (B, T, D)
    """
    attn, heads = attend(*qkv, causal, bias)
    return attn, merge_heads(heads)


def attention_decode(x, w_qkv, b_qkv, w_out, b_out, num_heads, past=None):
    """Causal attention for generation, with a key/value cache. Forward only.

    x: (B, t, D), the next t tokens; past: (k, v) of the tokens before them, each (B, H, T0, Dh),
    as the previous call returned (None at the start)
    returns out (B, t, D), present: (k, v) of all T0 + t tokens

    The outputs equal attention_forward's (causal) at those positions: under the causal mask a token's
    keys and values depend on it and the tokens before it, never on later ones, so they do not change
    when a new token arrives; those of earlier tokens are kept instead of recomputed, and
    sampling T tokens costs T one-token steps, not T forwards over the whole prefix.
    """
    xp = array_module(x)
    attention_shapes(x, w_qkv, num_heads)
    qkv, _ = linear_forward(x, w_qkv, b_qkv)
    q, k, v = split_heads(qkv, num_heads)  # each (B, H, t, Dh)
    ### BEGIN SOLUTION
    if past is not None:
        k, v = xp.concatenate([past[0], k], axis=2), xp.concatenate([past[1], v], axis=2)  # (B, H, T0 + t, Dh)
    _, heads = attend(q, k, v, causal=True)
    ### END SOLUTION
    out, _ = linear_forward(merge_heads(heads), w_out, b_out)
    return out, (k, v)


def attention_backward(dout, cache):
    """
    dout: (B, T, D)
    returns dx (B, T, D), dw_qkv (D, 3D), db_qkv (3D,), dw_out (D, D), db_out (D,), and drel
    (2T - 1, D) after a forward with rel
    """
    dheads, dw_out, db_out = linear_backward(dout, cache.out_cache)  # (B, T, D)
    dqkv, drel = attention_core_backward(dheads, cache)  # (B, T, 3D), (2T - 1, D) or None
    dx, dw_qkv, db_qkv = linear_backward(dqkv, cache.qkv_cache)
    return (dx, dw_qkv, db_qkv, dw_out, db_out) + ((drel,) if cache.rel is not None else ())


@accelerated(kernel.attention_core_backward)
def attention_core_backward(dheads, cache):
    """
    dheads: (B, T, D), the gradient of attention_core's heads
    returns dqkv (B, T, 3D) in the layout of the q/k/v projection's output, drel (2T - 1, D) after a
    forward with rel, else None
    """
    q, k, v = cache.qkv  # each (B, H, T, Dh)
    _, b, h, t, dh = cache.qkv.shape
    xp = array_module(dheads)
    ### BEGIN SOLUTION
    # Per head, with S = q kᵀ s (s = 1/√Dh), A = softmax(S), O = A v, each a matrix product:
    #     dv = Aᵀ dO,   dA = dO vᵀ,   dS = softmax_backward(dA),
    #     dq = s dS k,  dk = s dSᵀ q
    # Masked (causal) entries have A = 0, so their dS is 0 and no gradient leaks to the future.
    # With relative attention S also holds R_ij = s q_i · rel_{i-j}: scatter dS into P (B, H, T, 2T - 1),
    # P[i, i - j + T - 1] = dS_ij (one entry per offset in each row), then dq += s P rel, drel = s Pᵀ q.
    dheads = dheads.reshape(b, t, h, dh).transpose(0, 2, 1, 3)  # dO, (B, H, T, Dh)
    dv = cache.attn.swapaxes(-1, -2) @ dheads  # (B, H, T, Dh)
    dattn = dheads @ v.swapaxes(-1, -2)  # dA, (B, H, T, T)
    dscores = softmax_backward(dattn, (cache.attn, -1))  # dS; softmax's cache is its output and axis
    dq = dscores @ k * cache.scale  # (B, H, T, Dh)
    dk = dscores.swapaxes(-1, -2) @ q * cache.scale  # (B, H, T, Dh)
    drel = None
    if cache.rel is not None:
        rel_keys, offsets = cache.rel
        per_offset = xp.zeros((b, h, t, 2 * t - 1), dtype=dscores.dtype)  # P
        per_offset[:, :, xp.arange(t)[:, None], offsets] = dscores  # no two (i, j) of a row share an offset
        dq += per_offset @ rel_keys * cache.scale
        drel = (per_offset.swapaxes(-1, -2) @ q).sum(axis=0) * cache.scale  # (H, 2T - 1, Dh)
        drel = drel.transpose(1, 0, 2).reshape(2 * t - 1, h * dh)
    dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4)  # (B, T, 3, H, Dh), the layout of x U_qkv
    return dqkv.reshape(b, t, 3 * h * dh), drel
    ### END SOLUTION
