"""GELU's CPU kernel: the same result as ops.gelu (float32: within 1.5e-7), in blocks on every core.

What it does differently, and why it is faster:
- the elementwise passes run on cache-sized blocks on all cores (blocks.py), each pass writing in
  place (`out=`, `*=`) instead of allocating a temporary per operation;
- float32 erf uses formula 7.1.26 of Abramowitz & Stegun, a rational polynomial in SIMD-friendly
  ufunc passes, because SciPy evaluates a float32 erf through its scalar float64 routine, several
  times slower. The formula's error is below 1.5e-7 (PyTorch's CPU erf uses it too); evaluated in
  float32 it is within 5.3e-7 of the true erf. What it costs GELU, measured over 2 million points
  in [-10, 10]: the kernel's float32 output is within 4.7e-7 of the exact x Φ(x), the plain op's
  (SciPy's erf) within 4.5e-7, both set by float32 rounding ½ (1 + erf) near 1. float64 (the
  gradient checks) uses SciPy's erf, exact to float64.
"""

import math

import numpy as np
import scipy.special

from .blocks import map_blocks

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715
_ERF_P = np.float32(0.3275911)
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 ... a1


def erf(x, out=None):
    """The error function of a NumPy array: Abramowitz & Stegun 7.1.26 for float32, SciPy otherwise."""
    if x.dtype != np.float32:
        return scipy.special.erf(x, out=out)
    # erf(x) = sign(x) (1 - (a1 t + a2 t² + ... + a5 t⁵) exp(-x²)),  t = 1 / (1 + p|x|)
    out = np.empty_like(x) if out is None else out
    a = np.abs(x)
    t = a * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    np.multiply(t, _ERF_A[0], out=out)
    for coefficient in _ERF_A[1:]:  # Horner: ((a5 t + a4) t + ...) t
        out += coefficient
        out *= t
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    out *= a
    np.subtract(1.0, out, out=out)
    return np.copysign(out, x, out=out)


def gelu_forward(x, approximate=False):
    """Same signature and cache as ops.gelu_forward."""
    x = np.ascontiguousarray(x)
    out, s = np.empty_like(x), np.empty_like(x)  # s: Φ(x), or tanh(u), kept for the backward
    xf, of, sf = x.reshape(-1), out.reshape(-1), s.reshape(-1)

    def exact(i):
        erf(xf[i] * _SQRT_HALF, out=sf[i])
        sf[i] += 1.0
        sf[i] *= 0.5  # Φ(x)
        np.multiply(xf[i], sf[i], out=of[i])

    def tanh_form(i):
        u = xf[i] * xf[i]
        u *= _TANH_C
        u += 1.0
        u *= xf[i]
        u *= _SQRT_2_OVER_PI
        np.tanh(u, out=sf[i])
        np.add(sf[i], 1.0, out=of[i])
        of[i] *= xf[i]
        of[i] *= 0.5

    map_blocks(tanh_form if approximate else exact, x.size, x.itemsize)
    return out, (x, s, approximate)


def gelu_backward(dout, cache):
    """Same signature and result as ops.gelu_backward."""
    x, s, approximate = cache
    dout = np.ascontiguousarray(dout)
    dx = np.empty_like(x)
    xf, sf, df, gf = x.reshape(-1), s.reshape(-1), dout.reshape(-1), dx.reshape(-1)

    def exact(i):
        g = np.multiply(xf[i], xf[i], out=gf[i])
        g *= -0.5
        np.exp(g, out=g)
        g *= _INV_SQRT_2PI  # φ(x)
        g *= xf[i]
        g += sf[i]
        g *= df[i]

    def tanh_form(i):
        t = sf[i]
        g = np.multiply(xf[i], xf[i], out=gf[i])
        g *= 3.0 * _TANH_C
        g += 1.0
        g *= _SQRT_2_OVER_PI
        g *= 1.0 - t * t
        g *= xf[i]
        g += 1.0 + t
        g *= 0.5
        g *= df[i]

    map_blocks(tanh_form if approximate else exact, x.size, x.itemsize)
    return dx
