"""Group normalisation (Wu & He 2018) of channels-last feature maps: BiT's normalisation (Kolesnikov
et al. 2020), the ResNet baseline's in place of batch norm, so a model's output never depends on the
other images of its batch."""

from ..backend import array_module


def groupnorm_forward(x, gamma, beta, groups, eps=1e-5):
    """
    x: (B, H, W, C)   gamma, beta: (C,)   groups: G, dividing C into groups of C/G channels
    returns out (B, H, W, C), cache

        μ, σ²: mean and variance of each image's group, over its H·W·C/G values
        x̂ = (x - μ) r,  r = 1 / sqrt(σ² + eps)
        out = γ ⊙ x̂ + β                  (γ, β per channel)

    LayerNorm is the case G = 1 over a token's features; here every group of channels of an image,
    at every position, shares one μ and σ.
    """
    if x.ndim != 4 or x.shape[3] != gamma.shape[0]:
        raise ValueError(f"groupnorm: expected x (B, H, W, {gamma.shape[0]}) for {gamma.shape[0]} channels, got "
                         f"{x.shape}")  # fmt: skip
    b, h, w, c = x.shape
    if groups < 1 or c % groups:
        raise ValueError(f"groupnorm: {c} channels are not divisible into {groups} groups")
    xp = array_module(x)
    grouped = x.reshape(b, h * w, groups, c // groups)  # (B, HW, G, C/G): a group's values on axes 1 and 3
    centred = grouped - grouped.mean(axis=(1, 3), keepdims=True)  # x - μ
    var = (centred**2).mean(axis=(1, 3), keepdims=True)  # σ², (B, 1, G, 1)
    rstd = 1.0 / xp.sqrt(var + eps)  # r
    xhat = (centred * rstd).reshape(x.shape)
    return gamma * xhat + beta, (xhat, rstd, gamma, groups)


def groupnorm_backward(dout, cache):
    """
    dout: (B, H, W, C)
    returns dx (B, H, W, C), dgamma (C,), dbeta (C,)
    """
    xhat, rstd, gamma, groups = cache
    b, h, w, c = dout.shape
    # As for LayerNorm (see layernorm_backward), with the means ⟨·⟩ over a group's N = H·W·C/G values:
    # with g = dout ⊙ γ, the gradient reaching x̂,
    #     dx = r (g - ⟨g⟩ - x̂ ⟨g ⊙ x̂⟩)
    # γ and β act per channel, on every image and position alike:
    #     dγ = Σ_{B,H,W} dout ⊙ x̂,   dβ = Σ_{B,H,W} dout
    g = (dout * gamma).reshape(b, h * w, groups, c // groups)
    xg = xhat.reshape(g.shape)
    dx = rstd * (g - g.mean(axis=(1, 3), keepdims=True) - xg * (g * xg).mean(axis=(1, 3), keepdims=True))
    return dx.reshape(dout.shape), (dout * xhat).sum(axis=(0, 1, 2)), dout.sum(axis=(0, 1, 2))
