"""iGPT's generative pretraining (Chen et al. 2020, Sec. 3.1): next-pixel prediction on palette tokens.

The data: CIFAR images area-averaged to image_size², a palette of K colours fitted on the training
pixels at that resolution (k-means, minivit.data.palette), every image turned into T = image_size²
ids in raster order. The loss: the mean cross-entropy of every position's logits against the image's
own tokens, in nats per token (bits per token = nats / ln 2). Augmentation: a random horizontal flip
at most (the paper uses none at CIFAR scale beyond random crops at larger resolutions).

Two baselines on the same test tokens tell what the transformer learned beyond colour statistics:
the unigram model (each id's frequency in the training tokens) and the left-neighbour bigram model
(each id's frequency after the id before it in raster order), both with add-one smoothing.
"""

import math

import numpy as np

from .. import backend, ops
from ..data import random_flip
from ..data.palette import Palette, downsample
from ..models import IGPT
from ..models.igpt import preset

DEFAULT_PALETTE_SAMPLE = 200_000


def tokenize(images, size, palette):
    """uint8 images (N, H, W, 3) -> palette ids (N, size²) in raster order: area-averaged to size×size,
    then each pixel's nearest colour. The images must be on the palette's backend."""
    return palette.quantize(downsample(images, size)).reshape(len(images), -1)


def mean_nats(model, tokens, batch_size):
    """The model's mean next-token cross-entropy (nats per token) on ids (N, T), in eval mode, in batches."""
    model.eval()
    total = 0.0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i : i + batch_size]
        loss, _ = next_token_loss(model(batch), batch)
        total += float(loss) * len(batch)
    return total / len(tokens)


def unigram_nats(train, test, k):
    """Cross-entropy (nats per token) of test ids under the add-one-smoothed frequencies of train ids."""
    xp = backend.array_module(train)
    counts = xp.bincount(train.reshape(-1).astype(np.int64), minlength=k) + 1.0
    log_p = xp.log(counts / counts.sum())  # (K,)
    return -float(log_p[test.reshape(-1).astype(np.int64)].mean())


def bigram_nats(train, test, k):
    """Cross-entropy (nats per token) of test ids (N, T) under p(x_i | x_{i-1}), x_{i-1} the id before
    it in raster order, counted on train ids (N, T) with add-one smoothing; the first id of each image,
    which has no left neighbour, under the unigram model of the training images' first ids."""
    xp = backend.array_module(train)
    train, test = train.astype(np.int64), test.astype(np.int64)
    pairs = xp.bincount((train[:, :-1] * k + train[:, 1:]).reshape(-1), minlength=k * k).reshape(k, k) + 1.0
    log_p = xp.log(pairs / pairs.sum(axis=1, keepdims=True))  # (K, K): row = previous id
    rest = -log_p[test[:, :-1], test[:, 1:]].sum()
    first = unigram_nats(train[:, 0], test[:, 0], k) * len(test)
    return (float(rest) + first) / test.size


class Pretrain:
    """Next-pixel prediction with iGPT (see the module docstring). A task of minivit.train's loop."""

    model_class = IGPT
    model_fields = ("image_size", "vocab_size", "dim", "depth", "heads", "mlp_dim", "dropout")
    not_applicable = {"label_smoothing": 0.0, "crop_padding": 0, "mixup": 0.0, "cutmix": 0.0, "patch_size": None,
                      "pool": None, "patch_dropout": None, "stem": None, "stem_width": None}  # fmt: skip
    sums = ()

    @staticmethod
    def preset(name, num_classes, **overrides):  # the classes are not needed to model pixels
        return preset(name, **overrides)

    def __init__(self, config, data, arrays=None):
        """Fits the palette (or takes it from a checkpoint's arrays) and turns the images into tokens."""
        self.config = config
        model = config.model_config(len(data.classes))
        self.size, k = model.image_size, model.vocab_size
        side = data.train_images.shape[1]
        if side % self.size:
            raise ValueError(f"image_size {self.size} must divide the {side}-pixel images of {config.dataset}")
        self.num_train = config.train_subset or len(data.train_images)
        n_test = config.test_subset or len(data.test_images)
        train = downsample(backend.to_device(data.train_images[: self.num_train], config.backend), self.size)
        if arrays is not None and "palette.centers" in arrays:
            palette = Palette(backend.to_device(arrays["palette.centers"], config.backend))
        else:
            palette = Palette.fit(train, k=k, seed=config.seed,
                                  sample_size=config.palette_sample or DEFAULT_PALETTE_SAMPLE)  # fmt: skip
        self.train_tokens = palette.quantize(train).reshape(len(train), -1)  # (N, T) int16
        self.test_tokens = tokenize(backend.to_device(data.test_images[:n_test], config.backend), self.size, palette)
        baselines = {"unigram": unigram_nats(self.train_tokens, self.test_tokens, k),
                     "bigram": bigram_nats(self.train_tokens, self.test_tokens, k)}  # fmt: skip
        self.meta = {"baselines": baselines, "classes": list(data.classes)}
        self.arrays = {"palette.centers": backend.to_numpy(palette.centers)}

    def train_step(self, model, idx, rng):
        """Forward, loss and backward of one batch (idx: its image indices). returns loss, {}"""
        tokens = self.train_tokens[idx]  # (B, T)
        if self.config.flip:  # mirror each token grid left-right with probability ½
            grid = tokens.reshape(len(idx), self.size, self.size, 1)
            tokens = random_flip(grid, rng).reshape(len(idx), -1)
        logits = model(tokens)  # (B, T, K)
        loss, cache = next_token_loss(logits, tokens)
        model.backward(ops.cross_entropy_backward(cache).reshape(logits.shape))
        return loss, {}

    def evaluate(self, model):
        return {"test_loss": mean_nats(model, self.test_tokens, self.config.eval_batch_size)}

    @staticmethod
    def epoch_metrics(sums):
        return {"train_loss": sums["loss"] / sums["seen"]}

    @staticmethod
    def summary(m):
        return (f"train {m['train_loss']:.4f}  test {m['test_loss']:.4f} nats/token "
                f"({m['test_loss'] / math.log(2):.3f} bits)")  # fmt: skip


def next_token_loss(logits, tokens):
    """Mean cross-entropy over every position: logits (B, T, K) against the image's tokens (B, T)."""
    return ops.cross_entropy_forward(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
