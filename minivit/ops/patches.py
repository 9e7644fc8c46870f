"""Images to patch sequences and back: the reshape at the start of the ViT (paper, Sec. 3.1).

An image x of shape H×W×C becomes x_p of shape N×(P²C), N = HW/P², with each patch flattened
in (row-in-patch, column-in-patch, channel) order and patches in raster order, as in the
paper's JAX code. Both functions also take a batch (B, H, W, C).
"""


def _check_image(images, patch_size):
    if images.ndim not in (3, 4):
        raise ValueError(
            f"expected an image (H, W, C) or a batch (B, H, W, C), got an array of shape {images.shape}"
        )
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    h, w = images.shape[-3:-1]
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}×{w} is not divisible by patch {patch_size}")


def patchify(images, patch_size):
    """Cut images into flattened patches.

    images: (B, H, W, C) or (H, W, C)
    returns: (B, N, P*P*C) or (N, P*P*C), N = (H/P)*(W/P)
    """
    _check_image(images, patch_size)
    *lead, h, w, c = images.shape
    p = patch_size
    ### BEGIN SOLUTION
    x = images.reshape(*lead, h // p, p, w // p, p, c)  # (B, H/P, P, W/P, P, C)
    x = x.swapaxes(-4, -3)  # (B, H/P, W/P, P, P, C): patch grid first, then inside a patch
    return x.reshape(*lead, (h // p) * (w // p), p * p * c)
    ### END SOLUTION


def unpatchify(patches, patch_size, image_size):
    """Inverse of `patchify`.

    patches: (B, N, P*P*C) or (N, P*P*C)
    image_size: H, or (H, W) for a non-square image
    returns: (B, H, W, C) or (H, W, C)
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    p = patch_size
    if patches.ndim not in (2, 3):
        raise ValueError(f"expected patches (N, P*P*C) or (B, N, P*P*C), got shape {patches.shape}")
    if h % p or w % p:
        raise ValueError(f"image {h}×{w} is not divisible by patch {p}")
    *lead, n, d = patches.shape
    if n != (h // p) * (w // p) or d % (p * p):
        raise ValueError(
            f"patches of shape {patches.shape} do not tile a {h}×{w} image with patch {p}: "
            f"expected {(h // p) * (w // p)} patches of P*P*C = {p * p}*C values"
        )
    c = d // (p * p)
    ### BEGIN SOLUTION
    x = patches.reshape(*lead, h // p, w // p, p, p, c)
    x = x.swapaxes(-4, -3)  # (B, H/P, P, W/P, P, C)
    return x.reshape(*lead, h, w, c)
    ### END SOLUTION


def patchify_backward(dpatches, patch_size, image_size):
    """Gradient of `patchify`.

    patchify only moves values around (a permutation), so each input pixel receives exactly
    the gradient of the one output slot it was moved to: the backward is the inverse
    permutation, `unpatchify`.
    """
    return unpatchify(dpatches, patch_size, image_size)
