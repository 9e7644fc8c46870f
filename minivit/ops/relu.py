"""ReLU(x) = max(x, 0), the ResNet baseline's nonlinearity."""


def relu_forward(x):
    """
    x: any shape
    returns out (same shape), cache
    """
    out = x * (x > 0)
    return out, out > 0


def relu_backward(dout, cache):
    """
    dout: the shape of x
    returns dx: dout where x > 0, else 0 (the subgradient 0 at x = 0)
    """
    return dout * cache
