"""Softmax along one axis (attention weights, Eq. 6 of the appendix; class probabilities)."""

from ..backend import array_module
from ..kernels import accelerated
from ..kernels import softmax as kernel


@accelerated(kernel.softmax_forward)
def softmax_forward(x, axis=-1):
    """
    x: any shape
    returns y (same shape, each slice along `axis` sums to 1), cache = (y, axis)

        y_i = exp(x_i - m) / Σ_j exp(x_j - m),  m = max_j x_j
    Subtracting the max leaves the result unchanged and keeps exp from overflowing.
    """
    e = array_module(x).exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


@accelerated(kernel.softmax_backward)
def softmax_backward(dout, cache):
    """
    dout: same shape as the output y
    returns dx
    """
    y, axis = cache
    ### BEGIN SOLUTION
    # The Jacobian is ∂y_i/∂x_j = y_i (δ_ij - y_j), so
    #     dx_j = Σ_i dout_i y_i (δ_ij - y_j) = y_j (dout_j - Σ_i dout_i y_i)
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))
    ### END SOLUTION
