"""Softmax along one axis (attention weights, Eq. 6 of the appendix; class probabilities)."""

from ..backend import array_module, map_blocks


def softmax_rows(x, out):
    """Softmax of each row of x (M, K), written into out (M, K); out may be x."""
    xp = array_module(x)
    xp.subtract(x, x.max(axis=1, keepdims=True), out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


def softmax_rows_backward(dout, y, out):
    """dx of softmax_rows from dout and y = softmax(x), all (M, K); out may be dout."""
    xp = array_module(dout)
    dot = xp.einsum("nk,nk->n", dout, y)[:, None]  # Σ_i dout_i y_i
    xp.subtract(dout, dot, out=out)
    out *= y


def softmax_forward(x, axis=-1):
    """
    x: any shape
    returns out (same shape, each slice along `axis` sums to 1), cache

    softmax(x)_i = exp(x_i - m) / Σ_j exp(x_j - m),  m = max_j x_j
    Subtracting the max leaves the result unchanged and keeps exp from overflowing.
    """
    xp = array_module(x)
    x_last = xp.moveaxis(x, axis, -1)  # a view with the softmax axis last
    x2 = x_last.reshape(-1, x_last.shape[-1])  # (M, K) rows
    y = xp.empty(x2.shape, dtype=x.dtype)
    map_blocks(lambda i: softmax_rows(x2[i], y[i]), x2.shape[0], x2.shape[1] * x.itemsize, xp)
    return xp.moveaxis(y.reshape(x_last.shape), -1, axis), (y, axis, x_last.shape)


def softmax_backward(dout, cache):
    """
    dout: same shape as the output y
    returns dx

    The Jacobian is ∂y_i/∂x_j = y_i (δ_ij - y_j), so
        dx_j = Σ_i dout_i y_i (δ_ij - y_j) = y_j (dout_j - Σ_i dout_i y_i)
    """
    y, axis, last_shape = cache  # y: (M, K) rows, as the forward computed them
    xp = array_module(dout)
    d2 = xp.moveaxis(dout, axis, -1).reshape(y.shape)
    dx = xp.empty_like(y)
    map_blocks(lambda i: softmax_rows_backward(d2[i], y[i], dx[i]), y.shape[0], y.shape[1] * y.itemsize, xp)
    return xp.moveaxis(dx.reshape(last_shape), -1, axis)
