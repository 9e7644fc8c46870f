"""Inverted dropout (applied after every dense layer except the qkv one, Appendix B.1)."""

from ..backend import array_module, rng as backend_rng


def dropout_forward(x, p, train=True, rng=None):
    """
    x: any shape   p: probability of zeroing an element, in [0, 1)
    train: when False (or p == 0) the op is the identity
    rng: a Generator of x's backend (default: minivit.backend.rng for that backend)
    returns out (same shape), cache

    Kept elements are scaled by 1/(1-p), so the expected output equals x and eval needs no rescale.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, None
    rng = backend_rng(array_module(x)) if rng is None else rng
    mask = rng.random(x.shape, dtype=x.dtype) >= p
    mask = mask.astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """
    returns dx

    out = x ⊙ m with a fixed (scaled) mask m, so dx = dout ⊙ m.
    """
    mask = cache
    return dout if mask is None else dout * mask
