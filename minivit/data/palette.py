"""iGPT's colour palette (Chen et al. 2020, Sec. 3): each pixel becomes one of K colour ids.

iGPT does not model (R, G, B) values: it clusters the training set's pixel colours with k-means
(K = 512) and replaces every pixel by the index of its nearest centre, so an image becomes a
sequence of tokens from a K-word vocabulary, embedded with a lookup table like words.

    palette = Palette.fit(downsample(train_images, 16), k=512, seed=0)
    ids = palette.quantize(images)        # uint8 (B, H, W, 3) -> integer ids (B, H, W)
    back = palette.dequantize(ids)        # ids (B, H, W) -> uint8 (B, H, W, 3), each pixel its centre
    palette.save("palette.npz"); Palette.load("palette.npz")
    Palette.from_openai("kmeans_centers.npy")   # the paper's own palette, (512, 3) in [-1, 1]

Everything runs on the backend the images live on (NumPy or CuPy); the random draws of the fit
come from a NumPy Generator, so a seed gives the same palette on either.
"""

import numpy as np

from .. import backend
from ..atomic import atomic_file, save_npz

_BLOCK_ENTRIES = 1 << 22  # distances computed per block: (rows × K) entries, 16 MiB in float32


def downsample(images, size):
    """Area average: uint8 (B, H, W, C) or (H, W, C) -> uint8 (..., size, size, C), rounded.

    Each output pixel is the mean of the (H/size)×(W/size) block it covers (iGPT trains at reduced
    resolution; the palette is fitted at the resolution the model sees).
    """
    xp = backend.array_module(images)
    *lead, h, w, c = images.shape
    if h % size or w % size:
        raise ValueError(f"cannot area-average {h}×{w} images to {size}×{size}: {size} must divide both")
    blocks = images.reshape(*lead, size, h // size, size, w // size, c)
    return xp.rint(blocks.mean(axis=(-4, -2), dtype=np.float32)).astype(np.uint8)  # summed as float32, no copy


def _pixels(images):
    """uint8 images (..., 3) -> uint8 pixels (M, 3), with a clear error for anything else."""
    if images.dtype != np.uint8 or images.shape[-1:] != (3,):
        raise ValueError(f"expected uint8 RGB images (..., 3), got {images.dtype} of shape {images.shape}")
    return images.reshape(-1, 3)


def _nearest(pixels, centers):
    """(ids (M,) int64, squared distances (M,)) of each pixel (M, 3) to its nearest centre (K, 3).

    ‖x - c‖² = ‖x‖² - 2 x·c + ‖c‖²: one matmul per block instead of an (M, K, 3) difference array.
    Blocks of pixels are cast to float32 one at a time, so memory stays bounded for uint8 input too.
    """
    xp = backend.array_module(pixels)
    c2 = (centers * centers).sum(axis=1)  # (K,)
    ids = xp.empty(len(pixels), dtype=np.int64)
    dist = xp.empty(len(pixels), dtype=np.float32)
    step = max(1, _BLOCK_ENTRIES // len(centers))
    for i in range(0, len(pixels), step):
        x = pixels[i : i + step].astype(np.float32)  # (b, 3)
        d = c2 - 2.0 * (x @ centers.T)  # (b, K): ‖x - c‖² less ‖x‖², the same for every c
        ids[i : i + step] = d.argmin(axis=1)
        dist[i : i + step] = xp.maximum(d[xp.arange(len(x)), ids[i : i + step]] + (x * x).sum(axis=1), 0.0)
    return ids, dist


class Palette:
    """K colour centres (K, 3), float32 in pixel units [0, 255]."""

    def __init__(self, centers):
        xp = backend.array_module(centers)
        centers = xp.asarray(centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[1] != 3 or len(centers) < 1:
            raise ValueError(f"palette centres must be (K, 3) RGB values, got shape {centers.shape}")
        if not bool(xp.isfinite(centers).all()) or float(centers.min()) < 0 or float(centers.max()) > 255:
            raise ValueError("palette centres must be finite RGB values in [0, 255]")
        self.centers = centers

    def __len__(self):
        return len(self.centers)

    @classmethod
    def fit(cls, images, k=512, seed=0, sample_size=200_000, max_iters=100, tol=1e-4):
        """k-means on the colours of `images` (uint8 (..., 3), on NumPy or CuPy).

        sample_size: pixels drawn at random (without replacement) to fit on; all of them if there are
        fewer. Each Lloyd iteration costs one (sample_size × K × 3) distance matmul: at the default
        200,000 pixels and K = 512, about 0.3 s on 2 CPU cores, and the fit converges in tens of
        iterations (the README has the measured figure).
        k-means++ starts it (Arthur & Vassilvitskii 2007): the first centre is a random pixel, each
        next one a pixel drawn with probability ∝ its squared distance to the nearest centre so far.
        Lloyd's iterations then alternate: assign each pixel to its nearest centre, move each centre
        to the mean of its pixels, until the mean squared distance improves by less than `tol`
        (relative), no assignment changes, or max_iters. A centre left with no pixels is re-seeded at
        the pixel farthest from its own centre, never left as NaN.
        """
        pixels = _pixels(images)
        xp = backend.array_module(pixels)
        if not 1 <= k <= len(pixels):
            raise ValueError(f"k must be between 1 and the {len(pixels)} pixels given, got {k}")
        rng = np.random.default_rng(seed)
        if len(pixels) > sample_size:
            pixels = pixels[xp.asarray(np.sort(rng.choice(len(pixels), sample_size, replace=False)))]
        pixels = pixels.astype(np.float32)  # (M, 3), only the sample

        centers = xp.empty((k, 3), dtype=np.float32)  # k-means++
        centers[0] = pixels[int(rng.integers(len(pixels)))]
        closest = ((pixels - centers[0]) ** 2).sum(axis=1)  # (M,) squared distance to the nearest centre
        for j in range(1, k):
            weights = backend.to_numpy(closest).astype(np.float64)
            total = weights.sum()
            pick = int(rng.choice(len(pixels), p=weights / total)) if total > 0 else int(rng.integers(len(pixels)))
            centers[j] = pixels[pick]
            closest = xp.minimum(closest, ((pixels - centers[j]) ** 2).sum(axis=1))

        ids, inertia = None, np.inf
        for _ in range(max_iters):  # Lloyd
            new_ids, dist = _nearest(pixels, centers)
            new_inertia = float(dist.mean())
            if ids is not None and (bool((new_ids == ids).all()) or inertia - new_inertia <= tol * inertia):
                break
            ids, inertia = new_ids, new_inertia
            counts = xp.bincount(ids, minlength=k)  # (K,) pixels per centre
            ### BEGIN SOLUTION
            for channel in range(3):  # centre = mean of its pixels
                sums = xp.bincount(ids, weights=pixels[:, channel], minlength=k)
                centers[:, channel] = xp.where(counts > 0, sums / xp.maximum(counts, 1), centers[:, channel])
            ### END SOLUTION
            empty = backend.to_numpy(xp.flatnonzero(counts == 0))
            if len(empty):  # re-seed at the worst-served pixels, one each
                worst = backend.to_numpy(xp.argsort(-dist)[: len(empty)])
                centers[xp.asarray(empty)] = pixels[xp.asarray(worst)]
                ids, inertia = None, np.inf  # the assignment must be recomputed against the new centres
        return cls(centers)

    def quantize(self, images):
        """uint8 (B, H, W, 3) or (H, W, 3) -> ids (B, H, W) or (H, W): each pixel's nearest centre.

        Ids are int16 (K ≤ 32767), so a dataset's tokens take two bytes a pixel.
        """
        if backend.array_module(images) is not backend.array_module(self.centers):
            raise ValueError(f"images are on {backend.module_name(images)}, the palette on "
                             f"{backend.module_name(self.centers)}; move one with palette.to(...)")  # fmt: skip
        ids, _ = _nearest(_pixels(images), self.centers)
        return ids.astype(np.int16).reshape(images.shape[:-1])

    def dequantize(self, ids):
        """ids (...) -> uint8 images (..., 3), each pixel the colour of its centre (rounded)."""
        xp = backend.array_module(self.centers)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"palette ids must be integers, got dtype {ids.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise ValueError(f"palette ids must be in [0, {len(self)}), got values from {int(ids.min())} "
                             f"to {int(ids.max())}")  # fmt: skip
        return xp.rint(self.centers).astype(np.uint8)[xp.asarray(ids)]

    def to(self, backend_name):
        """The same palette on another backend ("numpy" or "cupy")."""
        return Palette(backend.to_device(self.centers, backend_name))

    def save(self, path):
        """Write the centres to an .npz file (atomically)."""
        save_npz(path, {"centers": backend.to_numpy(self.centers)})

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            if "centers" not in f.files:
                raise ValueError(f"{path} holds no palette (expected an array 'centers' written by Palette.save)")
            return cls(f["centers"])

    # OpenAI's released kmeans_centers.npy: (512, 3) floats in [-1, 1], i.e. pixel / 127.5 - 1.

    @classmethod
    def from_openai(cls, path):
        centers = np.load(path, allow_pickle=False)
        if centers.ndim != 2 or centers.shape[1] != 3 or np.abs(centers).max() > 1 + 1e-6:
            raise ValueError(f"{path}: expected OpenAI's layout, (K, 3) floats in [-1, 1], got shape "
                             f"{centers.shape}")  # fmt: skip
        return cls(np.clip((centers.astype(np.float64) + 1.0) * 127.5, 0, 255))

    def save_openai(self, path):
        with atomic_file(path, suffix=".npy") as f:
            np.save(f, backend.to_numpy(self.centers).astype(np.float64) / 127.5 - 1.0)
