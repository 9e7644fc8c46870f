"""Few-shot linear evaluation, the ViT paper's quick measure of a representation (Sec. 4.1, Appendix
B.3): "a regularized least-squares regression problem that maps the (frozen) representation of a
subset of training images to {−1, 1}^K target vectors", solved in closed form.

    z = (f - μ) / σ                          (μ, σ per feature, from the few labelled examples)
    Y_nk = 1 if y_n = k else -1               (the {−1, 1}^K targets)
    W, b = argmin ||Z W + 1 bᵀ - Y||² + λ ||W||²      (b not penalised)
         = W = Zcᵀ (Zc Zcᵀ + λ I)⁻¹ Yc,  b = mean(Y) - mean(Z) W     (Zc, Yc: centred; the N×N form,
                                                                      as N ≤ 25 shots × K classes ≪ F)
    prediction: argmax_k (z W + b)_k

k shots per class are drawn at random (several seeded draws: with one image a class the draw matters);
λ is chosen on held-out training images (the last `holdout` of the training set, never among the
shots, never the test set) and the test accuracy of that λ is reported, with its spread over draws.

    train_features = image_features(model, train_images, mean, std)     # a ViT's pre-logits, a ResNet's pool
    scores = few_shot(train_features, train_labels, test_features, test_labels, shots=(1, 5, 10, 25))
"""

import numpy as np

from . import backend
from .data import normalize
from .probe import class_ids, host_features, standardize

RIDGE_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def image_features(model, images, mean, std, batch_size=500):
    """A frozen model's features of uint8 images (N, H, W, C), `batch_size` at a time, in eval mode: its
    `features(images)` (the ViT's pre-logits y of Eq. 4, the ResNet's pooled map). returns NumPy (N, D)"""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(backend.to_device(images[i : i + batch_size], model.backend), mean, std, model.dtype)
        out.append(backend.to_numpy(model.features(x)))
    return np.concatenate(out)


def ridge_fit(features, labels, num_classes, l2):
    """The closed-form fit above: features (N, F), labels (N,) -> (W (F, K), b (K,), μ, σ), in float64."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 (the N×N system is singular without it), got {l2}")
    z, mean, std = standardize(host_features(features))
    targets = np.where(np.arange(num_classes) == labels[:, None], 1.0, -1.0)  # (N, K)
    zc, yc = z - z.mean(axis=0), targets - targets.mean(axis=0)
    w = zc.T @ np.linalg.solve(zc @ zc.T + l2 * np.eye(len(z)), yc)  # (F, K)
    b = targets.mean(axis=0) - z.mean(axis=0) @ w
    return w, b, mean, std


def ridge_predict(fit, features):
    """Class ids (N,) of features (N, F) under a ridge_fit."""
    w, b, mean, std = fit
    return np.argmax(((host_features(features) - mean) / std) @ w + b, axis=1)


def few_shot(train_features, train_labels, test_features, test_labels, shots=(1, 5, 10, 25), draws=5, holdout=1000,
             grid=RIDGE_GRID, seed=0):  # fmt: skip
    """For each k in `shots`: `draws` seeded draws of k training examples per class (from all but the last
    `holdout` training examples), a ridge fit for every λ of `grid`, λ chosen by the mean accuracy on the
    held-out examples (ties: the larger), and that λ's accuracy on the test examples.

    returns {k: {"l2": chosen λ, "holdout": [accuracy per draw], "test": [accuracy per draw]}}
    """
    train_features, test_features = host_features(train_features), host_features(test_features)
    labels, test_labels = class_ids(train_labels, len(train_features)), class_ids(test_labels, len(test_features))
    if not 0 < holdout < len(labels):
        raise ValueError(f"holdout must be between 1 and {len(labels) - 1}, got {holdout}")
    num_classes = int(max(labels.max(), test_labels.max())) + 1
    pool, val = slice(None, -holdout), slice(-holdout, None)
    members = [np.flatnonzero(labels[pool] == c) for c in range(num_classes)]
    fewest = min(len(m) for m in members)
    rng, scores = np.random.default_rng(seed), {}
    for k in shots:
        if not 1 <= k <= fewest:
            raise ValueError(f"shots must be between 1 and {fewest} (the fewest examples of a class), got {k}")
        fits = {l2: [] for l2 in grid}
        for _ in range(draws):
            chosen = np.concatenate([rng.choice(m, k, replace=False) for m in members])
            for l2 in grid:
                fits[l2].append(ridge_fit(train_features[chosen], labels[chosen], num_classes, l2))
        held = {l2: [_accuracy(f, train_features[val], labels[val]) for f in fits[l2]] for l2 in grid}
        best = max(sorted(grid, reverse=True), key=lambda l2: np.mean(held[l2]))
        scores[k] = {"l2": best, "holdout": held[best],
                     "test": [_accuracy(f, test_features, test_labels) for f in fits[best]]}  # fmt: skip
    return scores


def _accuracy(fit, features, labels):
    return float((ridge_predict(fit, features) == labels).mean())
