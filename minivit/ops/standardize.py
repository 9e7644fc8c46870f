"""Weight standardisation (Qiao et al. 2019): BiT's convolutions use their kernel standardised per
output channel, which with group normalisation trains as well as batch norm does at any batch size."""

from ..backend import array_module


def standardize_forward(w, eps=1e-10):
    """
    w: (k, k, C, F), a conv2d kernel
    returns ŵ (k, k, C, F), cache

        μ_f, σ²_f: mean and variance of output channel f's k·k·C weights
        ŵ = (w - μ_f) / sqrt(σ²_f + eps)

    (eps 1e-10 as in BiT's StdConv2d: it only guards a constant filter.)
    """
    if w.ndim != 4:
        raise ValueError(f"standardize: expected a conv2d kernel (k, k, C, F), got shape {w.shape}")
    xp = array_module(w)
    centred = w - w.mean(axis=(0, 1, 2), keepdims=True)
    rstd = 1.0 / xp.sqrt((centred**2).mean(axis=(0, 1, 2), keepdims=True) + eps)  # (1, 1, 1, F)
    what = centred * rstd
    return what, (what, rstd)


def standardize_backward(dout, cache):
    """
    dout: (k, k, C, F), the gradient of ŵ
    returns dw (k, k, C, F)
    """
    what, rstd = cache
    # LayerNorm's derivation without γ, per output channel, means ⟨·⟩ over its k·k·C weights:
    #     dw = r (dŵ - ⟨dŵ⟩ - ŵ ⟨dŵ ⊙ ŵ⟩)
    axes = (0, 1, 2)
    return rstd * (dout - dout.mean(axis=axes, keepdims=True) - what * (dout * what).mean(axis=axes, keepdims=True))
