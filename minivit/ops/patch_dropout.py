"""PatchDropout (Liu et al., WACV 2023): train on a random subset of each image's patch tokens.

After Eq. 1 every token carries its position embedding, so the blocks need not see all of them.
Dropping a share p of the patch tokens while training makes every layer's work (1 - p) times as
large (attention's even less) and acts as a regulariser; evaluation uses all tokens.
"""

from ..backend import array_module, rng as backend_rng


def patch_dropout_forward(x, p, train=True, rng=None, num_prefix=1):
    """
    x: (B, T, D) tokens; the first `num_prefix` (the class token) are always kept
    p: share of the other T - num_prefix tokens to drop, in [0, 1)
    train: when False (or p == 0) the op is the identity
    rng: a Generator of x's backend (default: minivit.backend.rng for that backend)
    returns out (B, num_prefix + K, D) with K = max(1, round((T - num_prefix)(1 - p))), cache

    Each image keeps its own random K patch tokens, in their original order.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"patch dropout probability must be in [0, 1), got {p}")
    if x.ndim != 3 or not 0 <= num_prefix < x.shape[1]:
        raise ValueError(f"patch dropout expects tokens (B, T, D) with T > {num_prefix}, got shape {x.shape}")
    if not train or p == 0.0:
        return x, None
    xp = array_module(x)
    rng = backend_rng(xp) if rng is None else rng
    b, t, _ = x.shape
    k = max(1, round((t - num_prefix) * (1.0 - p)))
    drawn = xp.argsort(rng.random((b, t - num_prefix)), axis=1)[:, :k]  # (B, K): a random K of each row
    patches = xp.sort(drawn, axis=1) + num_prefix
    prefix = xp.broadcast_to(xp.arange(num_prefix), (b, num_prefix))
    keep = xp.concatenate([prefix, patches], axis=1)  # (B, num_prefix + K) token ids
    return x[xp.arange(b)[:, None], keep], (keep, x.shape)


def patch_dropout_backward(dout, cache):
    """
    dout: (B, num_prefix + K, D)
    returns dx (B, T, D)

    out[b, j] = x[b, keep[b, j]] copies each kept token once, so its gradient goes back to the
    token it came from, and a dropped token's gradient is 0.
    """
    if cache is None:
        return dout
    keep, shape = cache
    xp = array_module(dout)
    dx = xp.zeros(shape, dtype=dout.dtype)
    dx[xp.arange(shape[0])[:, None], keep] = dout
    return dx
