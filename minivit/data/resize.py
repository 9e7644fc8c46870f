"""Bilinear resizing of uint8 images, for training a ViT at a higher resolution than CIFAR's 32×32
(the paper fine-tunes at a higher resolution than it pre-trains at, Sec. 3.2)."""

import numpy as np

from .. import backend

_BLOCK_IMAGES = 2048  # images resized at a time: the float32 intermediate stays under ~60 MB at 48×48


def resize(images, size):
    """uint8 (B, H, W, C) -> uint8 (B, size, size, C), bilinear, pixel centres aligned: output pixel i
    samples the input at u = (i + ½)·H/size − ½ (clamped to the image), rows then columns, rounded."""
    xp = backend.array_module(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (B, H, W, C), got {images.dtype} of shape {images.shape}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if images.shape[1:3] == (size, size):
        return images
    out = xp.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    rows, cols = _taps(images.shape[1], size, xp), _taps(images.shape[2], size, xp)
    for i in range(0, len(images), _BLOCK_IMAGES):
        x = images[i : i + _BLOCK_IMAGES].astype(np.float32)
        x = _mix(x, *rows, axis=1)
        x = _mix(x, *cols, axis=2)
        out[i : i + _BLOCK_IMAGES] = xp.rint(x).clip(0, 255).astype(np.uint8)
    return out


def _taps(n_in, n_out, xp):
    """For each output pixel along one axis: the two input pixels it mixes and the second one's weight."""
    u = xp.clip((xp.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = xp.floor(u).astype(np.int64)
    return lo, xp.minimum(lo + 1, n_in - 1), (u - lo).astype(np.float32)


def _mix(x, lo, hi, w, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    xp = backend.array_module(x)
    return xp.take(x, lo, axis=axis) * (1 - w) + xp.take(x, hi, axis=axis) * w
