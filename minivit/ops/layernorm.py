"""Layer normalisation over the last axis (the LN of Eq. 2-4)."""

from ..backend import array_module
from ..kernels import accelerated
from ..kernels import layernorm as kernel


@accelerated(kernel.layernorm_forward)
def layernorm_forward(x, gamma, beta, eps=1e-6):
    """
    x: (..., D)   gamma, beta: (D,)
    returns out (..., D), cache

        μ = ⟨x⟩,  σ² = ⟨(x - μ)²⟩        (means ⟨·⟩ over the last axis)
        x̂ = (x - μ) r,  r = 1 / sqrt(σ² + eps)
        out = γ ⊙ x̂ + β
    """
    if x.shape[-1] != gamma.shape[0]:
        raise ValueError(f"layernorm: input has {x.shape[-1]} features, gamma has {gamma.shape[0]}")
    xp = array_module(x)
    centred = x - x.mean(axis=-1, keepdims=True)  # x - μ, (..., D)
    var = (centred**2).mean(axis=-1, keepdims=True)  # σ², (..., 1)
    rstd = 1.0 / xp.sqrt(var + eps)  # r, (..., 1)
    xhat = centred * rstd  # (..., D)
    out = gamma * xhat + beta
    return out, (xhat, rstd, gamma)


@accelerated(kernel.layernorm_backward)
def layernorm_backward(dout, cache):
    """
    dout: (..., D)
    returns dx (..., D), dgamma (D,), dbeta (D,)
    """
    xhat, rstd, gamma = cache  # x̂ (..., D), r (..., 1), γ (D,)
    ### BEGIN SOLUTION
    # Let g = dout ⊙ γ, the gradient reaching x̂. x̂_i = (x_i - μ) r depends on x_j three ways:
    # directly, through μ (∂μ/∂x_j = 1/D) and through r (∂r/∂x_j = -r³ (x_j - μ) / D = -r² x̂_j / D):
    #     ∂x̂_i/∂x_j = r (δ_ij - 1/D - x̂_i x̂_j / D)
    # so  dx_j = Σ_i g_i ∂x̂_i/∂x_j = r (g_j - ⟨g⟩ - x̂_j ⟨g ⊙ x̂⟩).
    # γ and β act on every row alike, so their gradients sum over all rows:
    #     dγ = Σ_rows dout ⊙ x̂,   dβ = Σ_rows dout
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    rows = tuple(range(dout.ndim - 1))  # every axis but the last
    return dx, (dout * xhat).sum(axis=rows), dout.sum(axis=rows)
    ### END SOLUTION
