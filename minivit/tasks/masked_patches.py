"""Masked patch prediction, the ViT paper's self-supervised pretraining (Sec. 4.6, Appendix B.1.2),
as a task of minivit.train's loop: see minivit.models.masked_patches for the corruption and the
targets. The loss is the cross-entropy of the corrupted patches' 3-bit mean colours; the metrics
are that loss and the share of corrupted patches whose colour class is predicted right. A classifier
then starts from the weights with `TrainConfig.init` (task "classify").

Augmentation: the random crop and flip of the classifier's recipe (no mixup: there are no labels).
"""

import numpy as np

from .. import backend, ops
from ..data import augment
from ..data.cifar import get_spec
from ..models.masked_patches import (
    UNTOUCHED,
    Corruption,
    MaskedPatchViT,
    draw_corruption,
    masked_patch_preset,
)
from ..models.masked_patches import mean_colours as colour_targets
from .base import Classification, eval_parts


class MaskedPatches(Classification):
    """A task of minivit.train's loop (see minivit.tasks.base.Task for what a task gives the loop)."""

    name, description = "mpp", "the ViT's masked patch prediction"
    models = (MaskedPatchViT,)
    model_fields = ("patch_size", "dim", "depth", "heads", "mlp_dim", "pool", "dropout", "stem", "stem_width",
                    "pos_embed", "pos_place")  # fmt: skip
    not_applicable = {"image_size": None, "vocab_size": None, "palette_sample": None, "gen_loss_weight": 0.0,
                      "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0, "patch_dropout": None}  # fmt: skip
    # A prediction per corrupted patch; the loss of each step is a mean over its corrupted patches, summed
    # per image by the loop.
    sums = ("correct", "corrupted")
    predictions = "corrupted"
    accuracy_label, accuracy_name = "colour acc", "colour accuracy"  # of the corrupted patches' 3-bit mean colours
    # A REPLACED patch takes the token of a patch of any image of the batch, which may be another process's:
    # its batches are not split over processes (yet).
    data_parallel = False

    @staticmethod
    def preset(name, num_classes, **overrides):  # the classes are the 512 colours, not the dataset's
        return masked_patch_preset(name, **overrides)

    def __init__(self, config, data, arrays=None):
        spec = get_spec(config.dataset)
        self.config, self.mean, self.std = config, spec.mean, spec.std
        self.num_train = len(data.train_images)
        self.train_images = backend.to_device(data.train_images, config.backend)
        self.eval_parts = eval_parts(data)
        self.eval_images = {part: data.part(part)[0] for part in self.eval_parts}
        model = config.model_config()
        self.pixel_patch = model.patch_size << model.stem  # a patch's side in pixels (hybrid: of the stem's map)
        self.meta, self.arrays = {"classes": list(data.classes)}, {}

    def _batch(self, images, rng, train):
        """uint8 images -> (model input, colour targets (B, N), a Corruption), on the images' backend."""
        xp = backend.array_module(images)
        pixels, _ = augment(images, xp.zeros(len(images), dtype=np.int64), rng, num_classes=1, mean=(0, 0, 0),
                            std=(1, 1, 1), crop_padding=self.config.crop_padding if train else 0,
                            flip=self.config.flip and train, dtype=self.config.dtype)  # fmt: skip  (pixel / 255)
        x = (pixels - xp.asarray(self.mean, dtype=pixels.dtype)) / xp.asarray(self.std, dtype=pixels.dtype)
        targets = colour_targets(pixels, self.pixel_patch)
        kind, source = draw_corruption(rng, *targets.shape)
        return x, targets, Corruption(xp.asarray(kind), xp.asarray(source))

    def _loss(self, model, x, targets, corruption):
        """The cross-entropy over the corrupted patches; returns loss, its cache, those patches' (flat
        index, correct) and the logits' shape."""
        xp = backend.array_module(x)
        logits = model(x, corruption)  # (B, N, 512)
        corrupted = xp.flatnonzero(corruption.kind.reshape(-1) != UNTOUCHED)
        chosen = logits.reshape(-1, logits.shape[-1])[corrupted]  # (M, 512)
        loss, cache = ops.cross_entropy_forward(chosen, targets.reshape(-1)[corrupted])
        correct = int((xp.argmax(chosen, axis=1) == targets.reshape(-1)[corrupted]).sum())
        return loss, cache, corrupted, correct, logits.shape

    def train_step(self, model, idx, rng, rows=slice(None)):
        """Forward, loss and backward of one batch (idx: its image indices; on one process, so rows is the
        whole batch). returns loss, {sums}"""
        xp = backend.array_module(idx)
        x, targets, corruption = self._batch(self.train_images[idx], rng, train=True)
        loss, cache, corrupted, correct, shape = self._loss(model, x, targets, corruption)
        dlogits = xp.zeros((shape[0] * shape[1], shape[2]), dtype=x.dtype)
        dlogits[corrupted] = ops.cross_entropy_backward(cache)  # untouched patches add nothing to the loss
        model.backward(dlogits.reshape(shape))
        return loss, {"correct": correct, "corrupted": len(corrupted)}

    def evaluate(self, model, part, rows=slice(None)):
        """The images of `part`, each batch corrupted by its own fixed seed (the same patches every epoch); on
        one process (data_parallel is False), so rows is every image. The metrics are means per corrupted patch."""
        model.eval()
        total = correct = corrupted = 0
        size, images = self.config.eval_batch_size, self.eval_images[part]
        for i in range(0, len(images), size):
            rng = np.random.default_rng((self.config.seed, i))
            batch = backend.to_device(images[i : i + size], self.config.backend)
            loss, _, chosen, right, _ = self._loss(model, *self._batch(batch, rng, train=False))
            total += float(loss) * len(chosen)
            correct += right
            corrupted += len(chosen)
        return {"loss": total / corrupted, "accuracy": correct / corrupted}
