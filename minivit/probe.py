"""The linear probe (Chen et al. 2020, Sec. 3.3, Fig. 3): how much of an image's class a layer's
features hold, read out by a linear classifier that cannot build features of its own.

    f_l = mean_i LN(h_l)_i,  l = 0 ... L            (IGPT.layer_features, eval mode, in batches)
    z = (f - μ) / σ                                 (μ, σ per feature, from the probe's training set)
    p(y | z) = softmax(z W + b)
    J(W, b) = (1/N) Σ_n -log p(y_n | z_n) + (λ/2) ||W||²       (b is not penalised)

J is minimised by L-BFGS (scipy.optimize); its value and gradient come from minivit's own linear and
cross-entropy ops, in float64 on the host (CuPy features are copied there first). λ is chosen on a
held-out part of the training set (never the test set): each λ of the grid is fitted on the rest
and scored on the held-out part; the best is refitted on the whole training set and scored once on
the test set.

    train_f, test_f = layer_features(model, train_tokens, 100), layer_features(model, test_tokens, 100)
    rows = probe_layers(train_f, train_labels, test_f, test_labels)   # one row per layer
    report = compare(model, tokens, images, labels, seed=0)         # and against the two baselines
    few_labels(train_f[l], train_labels, test_f[l], test_labels, per_class=(10, 100), l2=1e-3)  # few labels
"""

import sys
import time

import numpy as np

from . import backend, ops
from .data.palette import downsample

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def layer_features(model, tokens, batch_size=100):
    """Every layer's features of the images whose ids are `tokens` (N, T), in eval mode, `batch_size`
    images at a time (memory bounded by one batch's activations). returns NumPy float32 (L + 1, N, D)"""
    model.eval()
    out = []
    for i in range(0, len(tokens), batch_size):
        out.append(backend.to_numpy(model.layer_features(tokens[i : i + batch_size])).astype(np.float32))
    return np.concatenate(out, axis=1)


class LinearProbe:
    """Multinomial logistic regression with an L2 penalty on W, fitted by L-BFGS (module docstring).

    probe = LinearProbe(l2=1e-3).fit(features (N, F), labels (N,))
    probe.accuracy(features, labels); probe.predict(features) -> (N,) class ids
    """

    def __init__(self, l2=1e-3, max_iter=1000, tol=1e-6):
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2, self.max_iter, self.tol = l2, max_iter, tol

    def fit(self, features, labels, num_classes=None, init=None):
        """features (N, F), labels (N,) ints in [0, C); C = num_classes or max(labels) + 1.
        init: a fitted LinearProbe of the same shape to start from (a warm start along a λ grid)."""
        from scipy.optimize import minimize

        x, labels = host_features(features), class_ids(labels, len(features))
        num_classes = num_classes or int(labels.max()) + 1
        z, self.mean, self.scale = standardize(x)  # (N, F)
        n_w = z.shape[1] * num_classes

        def objective(theta):
            w, b = theta[:n_w].reshape(z.shape[1], num_classes), theta[n_w:]
            logits, linear_cache = ops.linear_forward(z, w, b)  # (N, C)
            loss, ce_cache = ops.cross_entropy_forward(logits, labels)
            _, dw, db = ops.linear_backward(ops.cross_entropy_backward(ce_cache), linear_cache)
            value = float(loss) + 0.5 * self.l2 * float((w * w).sum())
            return value, np.concatenate([(dw + self.l2 * w).ravel(), db])

        start = np.zeros(n_w + num_classes) if init is None else np.concatenate([init.weight.ravel(), init.bias])
        began = time.perf_counter()
        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 0.0})  # fmt: skip
        self.fit_seconds = time.perf_counter() - began
        self.iterations, self.converged = int(result.nit), bool(result.success)
        self.weight, self.bias = result.x[:n_w].reshape(z.shape[1], num_classes), result.x[n_w:]
        return self

    def predict(self, features):
        """features (N, F) -> class ids (N,)"""
        z = (host_features(features) - self.mean) / self.scale
        return (z @ self.weight + self.bias).argmax(axis=1)

    def accuracy(self, features, labels):
        return float((self.predict(features) == class_ids(labels, len(features))).mean())


def choose_l2(features, labels, holdout, grid=L2_GRID, num_classes=None):
    """The λ of `grid` whose probe, fitted on all but the last `holdout` examples, is most accurate on
    those last `holdout` (CIFAR's training order is already random). Ties go to the larger λ.

    returns best λ, {λ: held-out accuracy}
    """
    if not 0 < holdout < len(features):
        raise ValueError(f"holdout must be between 1 and {len(features) - 1} (the training examples less one), "
                         f"got {holdout}")  # fmt: skip
    fit_x, fit_y, val_x, val_y = features[:-holdout], labels[:-holdout], features[-holdout:], labels[-holdout:]
    scores, probe = {}, None
    for l2 in sorted(grid, reverse=True):  # strong to weak: each fit starts from the smoother solution before it
        probe = LinearProbe(l2).fit(fit_x, fit_y, num_classes, init=probe)
        scores[l2] = probe.accuracy(val_x, val_y)
    best = max(sorted(scores, reverse=True), key=scores.get)
    return best, scores


def probe_layers(train_features, train_labels, test_features, test_labels, holdout=5000, grid=L2_GRID):
    """Probe each layer: choose λ on the held-out part of the training set, refit on all of it, score on
    the test set. features: (L + 1, N, F) (or a list of (N, F_l) arrays, one per layer)

    returns one dict per layer: layer, l2, holdout_accuracy, train_accuracy, test_accuracy, fit_s
    """
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    rows = []
    for layer, (train_f, test_f) in enumerate(zip(train_features, test_features, strict=True)):
        began = time.perf_counter()
        l2, scores = choose_l2(train_f, train_labels, holdout, grid, num_classes)
        probe = LinearProbe(l2).fit(train_f, train_labels, num_classes)
        rows.append({"layer": layer, "l2": l2, "holdout_accuracy": scores[l2],
                     "train_accuracy": probe.accuracy(train_f, train_labels),
                     "test_accuracy": probe.accuracy(test_f, test_labels),
                     "fit_s": time.perf_counter() - began})  # fmt: skip
    return rows


def best_layer(rows):
    """The layer a probe reports as its best: the highest held-out accuracy (part of the training set; the
    earlier layer on a tie), never the test accuracy, which is reported once, for the layer chosen."""
    return max(rows, key=lambda r: r["holdout_accuracy"])  # max keeps the first of equals


def few_labels(train_features, train_labels, test_features, test_labels, per_class, l2, draws=5, seed=0):
    """The probe with only `per_class` labelled training examples of each class: for each count, `draws`
    random draws of that many per class (seeded), each fitted at λ = l2 (choose it on the full training
    set's held-out part: with 10 examples a class there is nothing to hold out) and scored on the test set.
    train_features (N, F), test_features (M, F)

    returns {count: [test accuracy of each draw]}
    """
    labels = class_ids(train_labels, len(train_features))
    num_classes = int(max(labels.max(), np.max(test_labels))) + 1
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    fewest = min(len(m) for m in members)
    rng, scores = np.random.default_rng(seed), {}
    for count in per_class:
        if not 1 <= count <= fewest:
            raise ValueError(f"per_class must be between 1 and {fewest} (the fewest examples of a class), got {count}")
        scores[count] = []
        for _ in range(draws):
            chosen = np.concatenate([rng.choice(m, count, replace=False) for m in members])
            probe = LinearProbe(l2).fit(train_features[chosen], labels[chosen], num_classes)
            scores[count].append(probe.accuracy(test_features, test_labels))
    return scores


def compare(model, tokens, images, labels, holdout=5000, grid=L2_GRID, batch_size=100, seed=0, keep_features=False):
    """Probe every layer of a pretrained iGPT and, on the same split with the same code, two baselines:
    the same architecture at its random initialisation (the weights backend.seed(seed) gives, i.e. those
    the pretraining run started from), every layer; and the raw pixels at the model's resolution.

    tokens, images, labels: {"train": ..., "test": ...} of palette ids (N, T), uint8 images (N, H, W, 3)
    and class ids (N,), the ids and images on the model's backend
    returns {"layers": {"pretrained": rows, "random init": rows, "raw pixels": [row]} (rows as from
    probe_layers), "timings_s": {phase: seconds}, "peak_memory_mib": {phase: the process's peak so far}},
    and with keep_features, "features": {name: {"train": (L + 1, N, F), "test": ...}} (NumPy float32)
    """
    backend.seed(seed)
    untrained = type(model).from_config(model.config).to(model.backend, model.dtype)
    size = model.config.image_size
    rows, timings, peaks, kept = {}, {}, {"data": peak_memory_mib()}, {}

    def probe(name, features):
        kept[name] = features
        began = time.perf_counter()
        rows[name] = probe_layers(features["train"], labels["train"], features["test"], labels["test"], holdout, grid)
        timings[f"probe fits, {name}"] = time.perf_counter() - began
        peaks[f"probe fits, {name}"] = peak_memory_mib()

    for name, net in (("pretrained", model), ("random init", untrained)):
        began = time.perf_counter()
        features = {split: layer_features(net, ids, batch_size) for split, ids in tokens.items()}  # (L + 1, N, D)
        timings[f"features, {name}"] = time.perf_counter() - began
        peaks[f"features, {name}"] = peak_memory_mib()
        probe(name, features)
    # the pixels as one "layer": (1, N, size²·3)
    probe("raw pixels", {split: backend.to_numpy(downsample(x, size)).reshape(1, len(x), -1).astype(np.float32)
                         for split, x in images.items()})  # fmt: skip
    report = {"layers": rows, "timings_s": timings, "peak_memory_mib": peaks}
    return {**report, "features": kept} if keep_features else report


def peak_memory_mib():
    """The process's peak resident memory so far, in MiB (it only grows); None where it cannot be read."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kilobytes on Linux


def standardize(x):
    """Features x (N, F) standardised per feature, with the mean and the scale used (the std; 1 for a
    constant feature, which stays 0)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return (x - mean) / scale, mean, scale


def host_features(features):
    """Features (N, F) on the host, in float64, or a ValueError naming the shape expected."""
    x = backend.to_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, F), got {x.shape}")
    return x.astype(np.float64)


def class_ids(labels, n):
    """n integer class ids as NumPy int64, or a ValueError naming what was expected."""
    labels = backend.to_numpy(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integer class ids (one per feature row), got {labels.dtype} "
                         f"{labels.shape}")  # fmt: skip
    return labels.astype(np.int64)
