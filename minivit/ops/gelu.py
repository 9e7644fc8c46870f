"""GELU(x) = x Φ(x), the MLP's nonlinearity (Sec. 3.1), in the exact erf form or the tanh form."""

import math

from ..backend import array_module, erf, map_blocks

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
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    out, s = xp.empty_like(x), xp.empty_like(x)  # s: Φ(x), or tanh(u), kept for the backward
    xf, of, sf = x.reshape(-1), out.reshape(-1), s.reshape(-1)

    def exact(i):
        erf(xf[i] * _SQRT_HALF, out=sf[i])
        sf[i] += 1.0
        sf[i] *= 0.5  # Φ(x)
        xp.multiply(xf[i], sf[i], out=of[i])

    def tanh_form(i):
        u = xf[i] * xf[i]
        u *= _TANH_C
        u += 1.0
        u *= xf[i]
        u *= _SQRT_2_OVER_PI
        xp.tanh(u, out=sf[i])
        xp.add(sf[i], 1.0, out=of[i])
        of[i] *= xf[i]
        of[i] *= 0.5

    map_blocks(tanh_form if approximate else exact, x.size, x.itemsize, xp)
    return out, (x, s, approximate)


def gelu_backward(dout, cache):
    """
    dout: same shape as x
    returns dx

    exact:        d/dx [x Φ(x)] = Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / √(2π)
    approximate:  d/dx = ½ (1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²),  t = tanh(u)
    """
    x, s, approximate = cache
    xp = array_module(x)
    dout = xp.ascontiguousarray(dout)
    dx = xp.empty_like(x)
    xf, sf, df, gf = x.reshape(-1), s.reshape(-1), dout.reshape(-1), dx.reshape(-1)

    def exact(i):
        g = xp.multiply(xf[i], xf[i], out=gf[i])
        g *= -0.5
        xp.exp(g, out=g)
        g *= _INV_SQRT_2PI  # φ(x)
        g *= xf[i]
        g += sf[i]
        g *= df[i]

    def tanh_form(i):
        t = sf[i]
        g = xp.multiply(xf[i], xf[i], out=gf[i])
        g *= 3.0 * _TANH_C
        g += 1.0
        g *= _SQRT_2_OVER_PI
        g *= 1.0 - t * t
        g *= xf[i]
        g += 1.0 + t
        g *= 0.5
        g *= df[i]

    map_blocks(tanh_form if approximate else exact, x.size, x.itemsize, xp)
    return dx
