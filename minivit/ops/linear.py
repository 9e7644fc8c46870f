"""Affine map y = x W + b on the last axis (the E of Eq. 1, the MLP and attention projections)."""


def linear_forward(x, w, b):
    """
    x: (..., D_in)   w: (D_in, D_out)   b: (D_out,) or None
    returns out (..., D_out), cache
    """
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"linear: input has {x.shape[-1]} features, weight expects {w.shape[0]}")
    # One 2-D matmul on (rows, D_in) is the fastest BLAS call, whatever the leading shape.
    out = x.reshape(-1, w.shape[0]) @ w
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], w.shape[1]), (x, w, b is not None)


def linear_backward(dout, cache):
    """
    dout: (..., D_out)
    returns dx (..., D_in), dw (D_in, D_out), db (D_out,) or None
    """
    x, w, has_bias = cache
    ### BEGIN SOLUTION
    # With rows X (M, D_in) and Y = X W + 1 bᵀ:
    #     dX = dY Wᵀ,   dW = Xᵀ dY,   db = Σ_rows dY
    d2 = dout.reshape(-1, w.shape[1])  # (M, D_out)
    x2 = x.reshape(-1, w.shape[0])  # (M, D_in)
    dx = (d2 @ w.T).reshape(x.shape)
    dw = x2.T @ d2
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db
    ### END SOLUTION
