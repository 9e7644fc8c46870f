"""iGPT's tasks (Chen et al. 2020): generative pretraining (Sec. 3.1, next-pixel prediction on palette
tokens) and fine-tuning to classify (Sec. 3.4).

The data: CIFAR images area-averaged to image_size², a palette of K colours fitted on the training
pixels at that resolution (k-means, minivit.data.palette), every image turned into T = image_size²
ids in raster order. The loss: the mean cross-entropy of every position's logits against the image's
own tokens, in nats per token (bits per token = nats / ln 2). Augmentation: a random horizontal flip
at most (the paper uses none at CIFAR scale beyond random crops at larger resolutions).

Three baselines on the same test tokens tell what the transformer learned beyond colour statistics:
the unigram model (each id's frequency in the training tokens), the bigram model (each id's frequency
after the id before it in raster order) and the neighbour model (after the id to its left, or above it
at a row's start), all with add-one smoothing.
"""

import math

import numpy as np

from .. import backend, ops
from ..data import random_flip
from ..data.palette import Palette, downsample
from ..models import IGPT, IGPTClassifier
from ..models.igpt import classifier_preset, preset
from .base import Classification, Task, eval_parts, scores

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


def position_nats(model, tokens, batch_size):
    """Each position's next-token cross-entropy (nats), averaged over the images: ids (N, T) -> NumPy (T,),
    in eval mode, in batches. Where in the image the model is unsure: its mean is mean_nats."""
    model.eval()
    total = 0.0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i : i + batch_size]
        _, (log_probs, target) = next_token_loss(model(batch), batch)  # (B·T, K) each
        nats = backend.to_numpy(-(target * log_probs).sum(axis=1)).reshape(batch.shape)  # (B, T)
        total += nats.astype(np.float64).sum(axis=0)
    return total / len(tokens)


def unigram_nats(train, test, k):
    """Cross-entropy (nats per token) of test ids under the add-one-smoothed frequencies of train ids."""
    xp = backend.array_module(train)
    counts = xp.bincount(train.reshape(-1).astype(np.int64), minlength=k) + 1.0
    log_p = xp.log(counts / counts.sum())  # (K,)
    return -float(log_p[test.reshape(-1).astype(np.int64)].mean())


def bigram_nats(train, test, k, width=None):
    """Cross-entropy (nats per token) of test ids (N, T) under p(x_i | x_c(i)), counted on train ids (N, T)
    with add-one smoothing. The context c(i) is the id before it in raster order (width None); with the
    image's width W, its neighbour: the id to its left, or above it at the start of a row (in raster order
    a row's first id follows the end of the row above, which is no neighbour of it). The first id of each
    image, which has no context, under the unigram model of the training images' first ids."""
    xp = backend.array_module(train)
    train, test = train.astype(np.int64), test.astype(np.int64)
    position = np.arange(1, train.shape[1])
    context = position - 1 if width is None else np.where(position % width, position - 1, position - width)
    position, context = xp.asarray(position), xp.asarray(context)
    pairs = xp.bincount((train[:, context] * k + train[:, position]).reshape(-1), minlength=k * k).reshape(k, k) + 1.0
    log_p = xp.log(pairs / pairs.sum(axis=1, keepdims=True))  # (K, K): row = the context's id
    rest = -log_p[test[:, context], test[:, position]].sum()
    first = unigram_nats(train[:, 0], test[:, 0], k) * len(test)
    return (float(rest) + first) / test.size


class _TokenTask(Task):
    """What pretraining and fine-tuning share: the palette, the images as tokens, the flip."""

    model_fields = ("image_size", "vocab_size", "dim", "depth", "heads", "mlp_dim", "dropout")
    not_applicable = {"crop_padding": 0, "mixup": 0.0, "cutmix": 0.0, "patch_size": None, "pool": None,
                      "patch_dropout": None, "stem": None, "stem_width": None, "pos_embed": None,
                      "pos_place": None}  # fmt: skip

    def __init__(self, config, data, arrays=None):
        """Fits the palette, or takes it from `arrays` (of the checkpoint the run resumes or starts
        from), and turns the images into tokens."""
        self.config = config
        model = config.model_config()
        self.size, k = model.image_size, model.vocab_size
        side = data.train_images.shape[1]
        if side % self.size:
            raise ValueError(f"image_size {self.size} must divide the {side}-pixel images of {config.dataset}")
        self.num_train = len(data.train_images)
        train = downsample(backend.to_device(data.train_images, config.backend), self.size)
        if arrays is not None and "palette.centers" in arrays:
            centers = arrays["palette.centers"]
            if centers.shape != (k, 3):
                raise ValueError(f"the checkpoint's palette has {len(centers)} colours, this run's model {k}")
            palette = Palette(backend.to_device(centers, config.backend))
        else:
            palette = Palette.fit(train, k=k, seed=config.seed,
                                  sample_size=config.palette_sample or DEFAULT_PALETTE_SAMPLE)  # fmt: skip
        self.train_tokens = palette.quantize(train).reshape(len(train), -1)  # (N, T) int16
        self.eval_parts = eval_parts(data)
        self.eval_tokens = {part: tokenize(backend.to_device(data.part(part)[0], config.backend), self.size, palette)
                            for part in self.eval_parts}  # fmt: skip
        self.meta = {"classes": list(data.classes)}
        self.arrays = {"palette.centers": backend.to_numpy(palette.centers)}

    @classmethod
    def palette(cls, arrays, backend_name):
        return Palette(backend.to_device(arrays["palette.centers"], backend_name))

    def eval_size(self, part):
        return len(self.eval_tokens[part])

    def _train_tokens(self, idx, rng):
        """The training batch idx as ids (B, T), each token grid mirrored left-right with probability ½
        when the run flips."""
        tokens = self.train_tokens[idx]
        if self.config.flip:
            grid = tokens.reshape(len(idx), self.size, self.size, 1)
            tokens = random_flip(grid, rng).reshape(len(idx), -1)
        return tokens


class Pretrain(_TokenTask):
    """Next-pixel prediction with iGPT (see the module docstring). A task of minivit.train's loop."""

    name, description = "igpt", "iGPT's next-pixel pretraining"
    models = (IGPT,)
    commands = ("evaluate", "sample", "probe")
    not_applicable = {**_TokenTask.not_applicable, "label_smoothing": 0.0, "gen_loss_weight": 0.0}
    sums = ()

    @staticmethod
    def preset(name, num_classes, **overrides):  # the classes are not needed to model pixels
        return preset(name, **overrides)

    def __init__(self, config, data, arrays=None):
        super().__init__(config, data, arrays)
        k = config.model_config().vocab_size
        test = self.eval_tokens["test"]
        self.meta["baselines"] = {"unigram": unigram_nats(self.train_tokens, test, k),
                                  "bigram": bigram_nats(self.train_tokens, test, k),
                                  "neighbour": bigram_nats(self.train_tokens, test, k, self.size)}  # fmt: skip

    def train_step(self, model, idx, rng, rows=slice(None)):
        """Forward, loss and backward of this process's rows of one batch. returns its loss share, {}"""
        tokens = self._train_tokens(idx, rng)[rows]  # (B_r, T) of the whole batch's draws
        share = len(tokens) / len(idx)  # of the batch's mean loss
        logits = model(tokens)  # (B_r, T, K)
        loss, cache = next_token_loss(logits, tokens)
        dlogits = ops.cross_entropy_backward(cache).reshape(logits.shape)  # (B_r, T, K), of this block's mean
        dlogits *= share  # in place: the biggest array of the step
        model.backward(dlogits)
        return loss * share, {}

    def evaluate(self, model, part, rows=slice(None)):
        return {"loss": mean_nats(model, self.eval_tokens[part][rows], self.config.eval_batch_size)}

    def summary(self, m):
        return (f"train {m['train_loss']:.4f}  {scores(m, 'loss', '.4f')} nats/token "
                f"(test {m['test_loss'] / math.log(2):.3f} bits)")  # fmt: skip

    def report(self, metrics, count):
        nats, baselines = metrics["loss"], ", ".join(f"{k} {v:.4f}" for k, v in self.meta["baselines"].items())
        return (f"{nats:.4f} nats per token ({nats / math.log(2):.3f} bits) on the {count} test images; "
                f"baselines on these test tokens: {baselines}")  # fmt: skip


class Finetune(Classification, _TokenTask):
    """Classification with iGPT (Sec. 3.4), from a pretraining checkpoint (TrainConfig.init) or from
    scratch: class logits from the average of the final LayerNorm's output, and the loss

        L = L_CLF + w L_GEN        (w = TrainConfig.gen_loss_weight; the paper's joint objective, w = 1)

    L_CLF is the cross-entropy of the class logits (with label smoothing if set), L_GEN the next-pixel
    loss of the same images. The palette comes from the init checkpoint, so the tokens are the ones
    the model was pretrained on; from scratch it is fitted as for pretraining.
    """

    name, description = "finetune", "iGPT's classification"
    models = (IGPTClassifier,)
    commands = ("evaluate", "predict", "sample", "probe")

    @staticmethod
    def preset(name, num_classes, **overrides):
        return classifier_preset(name, num_classes, **overrides)

    def __init__(self, config, data, arrays=None):
        super().__init__(config, data, arrays)
        self.train_labels = backend.to_device(data.train_labels, config.backend)
        self.eval_labels = {part: backend.to_device(data.part(part)[1], config.backend) for part in self.eval_parts}

    def train_step(self, model, idx, rng, rows=slice(None)):
        """Forward, loss and backward of this process's rows of one batch. returns its loss share, {"correct"}"""
        xp = backend.array_module(idx)
        tokens, labels = self._train_tokens(idx, rng)[rows], self.train_labels[idx][rows]  # the whole batch's draws
        share = len(tokens) / len(idx)  # of the batch's mean loss
        logits, class_logits = model(tokens)  # (B_r, T, K), (B_r, C)
        loss, clf_cache = ops.cross_entropy_forward(class_logits, labels, self.config.label_smoothing)
        dlogits, w = None, self.config.gen_loss_weight
        if w:
            gen_loss, gen_cache = next_token_loss(logits, tokens)
            loss = loss + w * gen_loss
            dlogits = ops.cross_entropy_backward(gen_cache).reshape(logits.shape)
            dlogits *= w * share
        dclass = ops.cross_entropy_backward(clf_cache)
        dclass *= share
        model.backward(dlogits, dclass)
        return loss * share, {"correct": int((xp.argmax(class_logits, axis=1) == labels).sum())}

    def evaluate(self, model, part, rows=slice(None)):
        return classify_tokens(model, self.eval_tokens[part][rows], self.eval_labels[part][rows],
                               self.config.eval_batch_size)  # fmt: skip

    @classmethod
    def input_side(cls, model):
        return 32  # CIFAR's images, area-averaged to the model's image_size as in training

    @classmethod
    def image_logits(cls, model, meta, arrays, pixels):
        tokens = tokenize(pixels[None], model.config.image_size, cls.palette(arrays, "numpy"))
        return backend.to_numpy(model(tokens)[1])[0]


def classify_tokens(model, tokens, labels, batch_size):
    """An IGPTClassifier's classification loss, accuracy and predictions on ids (N, T) with labels (N,),
    in eval mode, in batches. returns {"loss", "accuracy", "predictions" (N,) NumPy int}"""
    model.eval()
    xp = backend.array_module(tokens)
    total, predictions = 0.0, []
    for i in range(0, len(tokens), batch_size):
        _, class_logits = model(tokens[i : i + batch_size])
        loss, _ = ops.cross_entropy_forward(class_logits, labels[i : i + batch_size])
        total += float(loss) * len(class_logits)
        predictions.append(backend.to_numpy(xp.argmax(class_logits, axis=1)))
    predictions = np.concatenate(predictions)
    return {"loss": total / len(tokens), "accuracy": float((predictions == backend.to_numpy(labels)).mean()),
            "predictions": predictions}  # fmt: skip


def next_token_loss(logits, tokens):
    """Mean cross-entropy over every position: logits (B, T, K) against the image's tokens (B, T)."""
    return ops.cross_entropy_forward(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
