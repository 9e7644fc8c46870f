"""Softmax along one axis (attention weights, Eq. 5 of the appendix; class probabilities)."""

from ..backend import array_module


def softmax_forward(x, axis=-1):
    """
    x: any shape
    returns out (same shape, each slice along `axis` sums to 1), cache

    softmax(x)_i = exp(x_i - m) / Σ_j exp(x_j - m),  m = max_j x_j
    Subtracting the max leaves the result unchanged and keeps exp from overflowing.
    """
    xp = array_module(x)
    out = x - x.max(axis=axis, keepdims=True)
    xp.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out, (out, axis)


def softmax_backward(dout, cache):
    """
    dout: same shape as the output y
    returns dx

    The Jacobian is ∂y_i/∂x_j = y_i (δ_ij - y_j), so
        dx_j = Σ_i dout_i y_i (δ_ij - y_j) = y_j (dout_j - Σ_i dout_i y_i)
    """
    y, axis = cache
    dx = dout - (dout * y).sum(axis=axis, keepdims=True)
    dx *= y
    return dx
