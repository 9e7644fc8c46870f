"""Mean over tokens: the global-average-pooling (GAP) head the paper compares with the class token."""


def mean_pool_forward(x):
    """
    x: (B, T, D)
    returns out (B, D), cache
    """
    return x.mean(axis=1), x.shape


def mean_pool_backward(dout, cache):
    """
    dout: (B, D)
    returns dx (B, T, D)

    out = (1/T) Σ_t x_t, so every token receives dout / T.
    """
    t = cache[1]
    dx = dout[:, None, :] / t
    return dx.repeat(t, axis=1)
