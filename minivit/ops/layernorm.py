"""Layer normalisation over the last axis (the LN of Eq. 2-4)."""


def layernorm_forward(x, gamma, beta, eps=1e-6):
    """
    x: (..., D)   gamma, beta: (D,)
    returns out (..., D), cache

        x̂ = (x - μ) / sqrt(σ² + eps),   out = γ ⊙ x̂ + β   (μ, σ² over the last axis)
    """
    if x.shape[-1] != gamma.shape[0]:
        raise ValueError(f"layernorm: input has {x.shape[-1]} features, gamma has {gamma.shape[0]}")
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / (var + eps) ** 0.5  # (..., 1)
    xhat = xc
    xhat *= rstd  # reuse xc's buffer: x̂ is all the backward needs
    out = xhat * gamma
    out += beta
    return out, (xhat, rstd, gamma)


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
    d = gamma.shape[0]
    g = dout * gamma
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= rstd
    dgamma = (dout * xhat).reshape(-1, d).sum(axis=0)
    dbeta = dout.reshape(-1, d).sum(axis=0)
    return dx, dgamma, dbeta
