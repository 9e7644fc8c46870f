"""Augmentation on the backend's arrays (NumPy or CuPy), with every random draw from a NumPy Generator.

The draws are a few numbers per image (offsets, flips, a mixing weight), so they come from the host
Generator the caller passes in, and a seed gives the same augmentation on either backend.

    x, targets = augment(uint8_images, labels, rng, num_classes=10, mean=..., std=...)
"""

import numpy as np

from .. import backend


def random_crop(images, padding, rng):
    """Pad with `padding` zero pixels on each side, then cut a random H×W window per image.

    images: (B, H, W, C); returns (B, H, W, C), same dtype.
    """
    xp = backend.array_module(images)
    b, h, w, _ = images.shape
    padded = xp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    top, left = (xp.asarray(rng.integers(0, 2 * padding + 1, size=b)) for _ in range(2))
    rows = top[:, None] + xp.arange(h)  # (B, H)
    cols = left[:, None] + xp.arange(w)  # (B, W)
    return padded[xp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images, rng, p=0.5):
    """Mirror each image left-right with probability p. images: (B, H, W, C)."""
    xp = backend.array_module(images)
    flip = xp.asarray(rng.random(images.shape[0]) < p)
    return xp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def normalize(images, mean, std, dtype=np.float32):
    """uint8 (B, H, W, C) -> (pixel / 255 - mean) / std per channel, as `dtype`."""
    xp = backend.array_module(images)
    x = images.astype(dtype)
    x *= 1.0 / 255.0
    x -= xp.asarray(mean, dtype=dtype)
    x /= xp.asarray(std, dtype=dtype)
    return x


def one_hot(labels, num_classes, dtype=np.float32):
    xp = backend.array_module(labels)
    return xp.eye(num_classes, dtype=dtype)[labels]


def mixup(images, targets, alpha, rng):
    """mixup (Zhang et al. 2018): x = λ x + (1-λ) x[perm], the same for the targets, λ ~ Beta(α, α).

    images: (B, H, W, C) float; targets: (B, K) probabilities.
    """
    xp = backend.array_module(images)
    lam = float(rng.beta(alpha, alpha))
    perm = xp.asarray(rng.permutation(images.shape[0]))
    return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]


def cutmix(images, targets, alpha, rng):
    """CutMix (Yun et al. 2019): paste a box of another image; targets mix by the box's area.

    The box has area (1-λ)·H·W for λ ~ Beta(α, α), centred anywhere and clipped to the image, so
    the targets use the area that was actually pasted.
    """
    xp = backend.array_module(images)
    b, h, w, _ = images.shape
    lam = float(rng.beta(alpha, alpha))
    perm = xp.asarray(rng.permutation(b))
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    out = images.copy()
    out[:, y0:y1, x0:x1] = images[perm, y0:y1, x0:x1]
    kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, kept * targets + (1 - kept) * targets[perm]


def augment(images, labels, rng, *, num_classes, mean, std, crop_padding=4, flip=True, mixup_alpha=0.0,
            cutmix_alpha=0.0, mix_prob=1.0, dtype=np.float32):  # fmt: skip
    """The training pipeline: crop, flip, normalise, then mixup or CutMix (one, chosen at random).

    images: (B, H, W, C) uint8 on the backend; labels: (B,) class ids on the backend.
    returns x (B, H, W, C) `dtype` and targets: the labels, or (B, K) probabilities when mixed.
    """
    if crop_padding:
        images = random_crop(images, crop_padding, rng)
    if flip:
        images = random_flip(images, rng)
    x = normalize(images, mean, std, dtype)
    mixers = [(f, a) for f, a in ((mixup, mixup_alpha), (cutmix, cutmix_alpha)) if a > 0]
    if mixers and rng.random() < mix_prob:
        mix, alpha = mixers[rng.integers(len(mixers))]
        return mix(x, one_hot(labels, num_classes, dtype), alpha, rng)
    return x, labels


def epoch_batches(n, batch_size, rng):
    """A shuffled epoch as index arrays of `batch_size` (the last partial batch is dropped)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
