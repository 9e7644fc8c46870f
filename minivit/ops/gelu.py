"""GELU(x) = x Φ(x), the MLP's nonlinearity (Sec. 3.1), in the exact erf form or the tanh form."""

import math

from ..backend import array_module, erf

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


def gelu_forward(x, approximate=False):
    """
    x: any shape
    returns out (same shape), cache

    exact:        out = x Φ(x),  Φ(x) = ½ (1 + erf(x / √2))
    approximate:  out = ½ x (1 + tanh(u)),  u = √(2/π) (x + 0.044715 x³)
    """
    if approximate:
        u = x * x
        u *= _TANH_C
        u += 1.0
        u *= x
        u *= _SQRT_2_OVER_PI
        t = array_module(x).tanh(u, out=u)  # tanh(u), in u's buffer
        out = t + 1.0
        out *= x
        out *= 0.5
        return out, (x, t, True)
    cdf = erf(x * _SQRT_HALF)
    cdf += 1.0
    cdf *= 0.5  # Φ(x)
    return x * cdf, (x, cdf, False)


def gelu_backward(dout, cache):
    """
    dout: same shape as x
    returns dx

    exact:        d/dx [x Φ(x)] = Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / √(2π)
    approximate:  d/dx = ½ (1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²),  t = tanh(u)
    """
    x, s, approximate = cache
    xp = array_module(x)
    if approximate:
        t = s
        grad = x * x
        grad *= 3.0 * _TANH_C
        grad += 1.0
        grad *= _SQRT_2_OVER_PI
        grad *= 1.0 - t * t
        grad *= x
        grad += 1.0 + t
        grad *= 0.5
    else:
        cdf = s
        grad = x * x
        grad *= -0.5
        xp.exp(grad, out=grad)
        grad *= _INV_SQRT_2PI  # φ(x)
        grad *= x
        grad += cdf
    grad *= dout
    return grad
