"""Layer normalisation over the last axis (the LN of Eq. 2-4)."""

from ..backend import array_module, map_blocks


def layernorm_forward(x, gamma, beta, eps=1e-6):
    """
    x: (..., D)   gamma, beta: (D,)
    returns out (..., D), cache

        x̂ = (x - μ) / sqrt(σ² + eps),   out = γ ⊙ x̂ + β   (μ, σ² over the last axis)
    """
    if x.shape[-1] != gamma.shape[0]:
        raise ValueError(f"layernorm: input has {x.shape[-1]} features, gamma has {gamma.shape[0]}")
    xp = array_module(x)
    d = x.shape[-1]
    x2 = x.reshape(-1, d)  # (M, D) rows
    xhat, out = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)

    def rows(i):
        h = xp.subtract(x2[i], xp.einsum("nd->n", x2[i])[:, None] / d, out=xhat[i])  # x - μ
        var = xp.einsum("nd,nd->n", h, h)[:, None] / d  # σ², without a squared copy
        xp.sqrt(var + eps, out=rstd[i])
        xp.reciprocal(rstd[i], out=rstd[i])
        h *= rstd[i]  # x̂
        xp.multiply(h, gamma, out=out[i])
        out[i] += beta

    map_blocks(rows, x2.shape[0], d * x.itemsize, xp)
    return out.reshape(x.shape), (xhat, rstd, gamma)


def layernorm_backward(dout, cache):
    """
    dout: (..., D)
    returns dx (..., D), dgamma (D,), dbeta (D,)

    With g = dout ⊙ γ and means ⟨·⟩ over the last axis, differentiating x̂ = (x - μ) r,
    r = (σ² + eps)^(-1/2), through μ and σ² as well as x gives
        dx = r (g - ⟨g⟩ - x̂ ⟨g ⊙ x̂⟩)
    and, summing over all rows,  dγ = Σ dout ⊙ x̂,  dβ = Σ dout.
    """
    xhat, rstd, gamma = cache
    xp = array_module(dout)
    d = gamma.shape[0]
    dout2 = dout.reshape(-1, d)
    dx = xp.empty_like(xhat)
    partial = {}  # block start -> (dγ, dβ) of its rows, summed while the block is in cache

    def rows(i):
        partial[i.start] = (xp.einsum("nd,nd->d", dout2[i], xhat[i]), dout2[i].sum(axis=0))
        g = xp.multiply(dout2[i], gamma, out=dx[i])
        mean_gx = xp.einsum("nd,nd->n", g, xhat[i])[:, None] / d  # ⟨g ⊙ x̂⟩
        g -= xp.einsum("nd->n", g)[:, None] / d  # ⟨g⟩
        g -= xhat[i] * mean_gx
        g *= rstd[i]

    map_blocks(rows, xhat.shape[0], d * xhat.itemsize, xp)
    blocks = [partial[start] for start in sorted(partial)]  # in row order, so any thread count gives the same bits
    dgamma, dbeta = (sum(sums) for sums in zip(*blocks))
    return dx.reshape(dout.shape), dgamma, dbeta
