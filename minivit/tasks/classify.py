"""The paper's task: a ViT classifies CIFAR images (augmented), trained with cross-entropy. The default
task of the training loop (TrainConfig.task "classify"). The same task trains the paper's convolutional
baseline, a BiT-style ResNet (TrainConfig.model "resnet-mini" or "resnet-tiny")."""

import numpy as np

from .. import backend, ops
from ..data import augment, normalize
from ..data.cifar import get_spec
from ..data.resize import resize
from ..models import PRESETS, ViT, preset
from ..models import resnet
from .base import Classification, eval_parts


RESNET = "resnet-"  # the prefix of TrainConfig.model that names a ResNet preset: resnet-mini, resnet-tiny


class Classify(Classification):
    """A ViT classifier (see Task for what every task gives the loop and the commands)."""

    name, description = "classify", "a ViT (or ResNet) classifier"
    models = (ViT, resnet.ResNet)
    model_fields = ("image_size", "patch_size", "dim", "depth", "heads", "mlp_dim", "pool", "dropout", "patch_dropout",
                    "stem", "stem_width", "pos_embed", "pos_place")  # fmt: skip
    not_applicable = {"vocab_size": None, "palette_sample": None, "gen_loss_weight": 0.0}
    commands = ("evaluate", "predict")

    @staticmethod
    def preset(name, num_classes, **overrides):
        choices = [*PRESETS, *(RESNET + n for n in resnet.PRESETS)]
        if name not in choices:
            raise ValueError(f"unknown model {name!r} for task 'classify'; expected one of {choices}")
        if name.startswith(RESNET):  # the ResNet takes its preset's layout, at any image size
            vit_only = sorted(set(overrides) - {"image_size"})
            if vit_only:
                raise ValueError(f"{', '.join(vit_only)} set the ViT's layout; model {name!r} is a ResNet, which "
                                 "takes image_size only")  # fmt: skip
            return resnet.preset(name.removeprefix(RESNET), num_classes=num_classes, **overrides)
        return preset(name, num_classes=num_classes, **overrides)

    def __init__(self, config, data, arrays=None):
        spec = get_spec(config.dataset)
        self.config, self.spec = config, spec
        self.num_train = len(data.train_images)
        size = config.model_config().image_size  # the dataset's side unless a resolution is set
        self.train_images = resize(backend.to_device(data.train_images, config.backend), size)
        self.train_labels = backend.to_device(data.train_labels, config.backend)
        self.eval_parts = eval_parts(data)
        self.eval_sets = {}  # {part: (images at the model's size, labels)}
        for part in self.eval_parts:
            images, labels = data.part(part)
            self.eval_sets[part] = (resize(images, size), labels)
        self.aug = config.augment_options()
        self.meta = {"classes": list(data.classes), "mean": list(spec.mean), "std": list(spec.std)}
        self.arrays = {}

    def train_step(self, model, idx, rng, rows=slice(None)):
        """Forward, loss and backward of this process's rows of one batch. returns its loss share, {sums}"""
        xp = backend.array_module(idx)
        x, targets = augment(self.train_images[idx], self.train_labels[idx], rng, **self.aug)  # the whole batch's draws
        x, targets = x[rows], targets[rows]
        share = len(x) / len(idx)  # of the batch's mean loss
        logits = model(x)
        loss, cache = ops.cross_entropy_forward(logits, targets, self.config.label_smoothing)
        dlogits = ops.cross_entropy_backward(cache)  # of this block's mean; times share: of its share of the batch's
        dlogits *= share
        model.backward(dlogits)
        hard = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
        return loss * share, {"correct": int((xp.argmax(logits, axis=1) == hard).sum())}

    def evaluate(self, model, part, rows=slice(None)):
        images, labels = self.eval_sets[part]
        return evaluate(model, images[rows], labels[rows], self.spec.mean, self.spec.std, self.config.eval_batch_size)

    def eval_size(self, part):
        return len(self.eval_sets[part][1])

    @classmethod
    def input_side(cls, model):
        return model.config.image_size

    @classmethod
    def image_logits(cls, model, meta, arrays, pixels):
        return backend.to_numpy(model(normalize(pixels[None], meta["mean"], meta["std"], model.dtype)))[0]


def evaluate(model, images, labels, mean, std, batch_size=500):
    """Loss, accuracy and predictions of `model` on uint8 images (B, H, W, C) with int labels (B,).
    Leaves the model in eval mode.

    returns {"loss", "accuracy", "predictions" (B,) NumPy int}
    """
    model.eval()
    xp = backend.use_module(model.backend)
    total, predictions = 0.0, []
    for i in range(0, len(images), batch_size):
        x = normalize(backend.to_device(images[i : i + batch_size], model.backend), mean, std, model.dtype)
        y = backend.to_device(labels[i : i + batch_size], model.backend)
        logits = model(x)
        loss, _ = ops.cross_entropy_forward(logits, y)
        total += float(loss) * len(x)
        predictions.append(backend.to_numpy(xp.argmax(logits, axis=1)))
    predictions = np.concatenate(predictions)
    accuracy = float((predictions == backend.to_numpy(labels)).mean())
    return {"loss": total / len(images), "accuracy": accuracy, "predictions": predictions}
