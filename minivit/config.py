"""What a run computes: TrainConfig (every setting of a run, checked before any work) and RECIPES, the
named settings of the README's measured runs (see the README for what each measured).

    config = replace(RECIPES["quick"], epochs=3)      # a recipe with a field changed
    config.check()                                     # ValueError naming the first field that cannot work
    config.model_config()                              # the model it trains: the task's preset, fields overridden
"""

import functools
from dataclasses import dataclass
from pathlib import Path

from . import backend
from .data.cifar import get_spec
from .tasks import TASKS


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (where the data lives is not part of it)."""

    task: str = "classify"  # one of TASKS: "classify" (a ViT), "igpt", "finetune" (iGPT's), "mpp" (masked patches)
    init: str | None = None  # a checkpoint.npz whose model weights the run starts from (fine-tuning); None: random
    dataset: str = "cifar10"
    model: str = "mini"  # the task's preset (ViT: tiny, mini; ResNet: resnet-mini, -tiny; iGPT: cpu, gpu); fields below override it
    image_size: int | None = None  # iGPT: images area-averaged to this (T = image_size²); ViT: resized to it
    vocab_size: int | None = None  # iGPT: the palette's K colours
    palette_sample: int | None = None  # iGPT: pixels the palette's k-means is fitted on (None: 200,000)
    patch_size: int | None = None
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    pool: str | None = None
    dropout: float | None = None
    patch_dropout: float | None = None
    stem: int | None = None
    stem_width: int | None = None
    pos_embed: str | None = None  # ViT: "1d", "2d" or "none" (Appendix D.4)
    pos_place: str | None = None  # ViT: "input", "every-layer" or "every-layer-shared"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 2.0
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # global gradient norm; 0 turns clipping off
    label_smoothing: float = 0.1
    gen_loss_weight: float = 0.0  # task "finetune": w of L_CLF + w L_GEN (the paper's joint objective: 1)
    crop_padding: int = 4  # random crop after zero padding; 0 turns it off
    flip: bool = True
    mixup: float = 0.0  # Beta(α, α) of mixup; 0 turns it off
    cutmix: float = 0.0  # Beta(α, α) of CutMix; 0 turns it off
    mix_prob: float = 1.0  # share of batches mixed when mixup or cutmix is on
    train_subset: int = 0  # use only the first n training images (0: all but the validation images)
    val_size: int = 0  # hold out the last n training images to choose on: val_loss/val_accuracy (0: none)
    test_subset: int = 0  # evaluate on the first n test images (0: all)
    eval_batch_size: int = 500
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"

    def model_config(self):
        """The config of the model this run trains (the task's: a ViTConfig, an IGPTConfig, ...): the preset
        `model`, with the fields set here. Built once per TrainConfig."""
        return _model_config(self)

    def augment_options(self):
        """The keyword arguments of data.augment() for this run."""
        spec = get_spec(self.dataset)
        return {"num_classes": spec.num_classes, "mean": spec.mean, "std": spec.std, "crop_padding": self.crop_padding,
                "flip": self.flip, "mixup_alpha": self.mixup, "cutmix_alpha": self.cutmix,
                "mix_prob": self.mix_prob, "dtype": self.dtype}  # fmt: skip

    def check(self):
        """Raise ValueError naming the first field that cannot work."""
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        get_spec(self.dataset)  # DataError for an unknown dataset
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        nonnegative = ("lr", "min_lr", "warmup_epochs", "weight_decay", "grad_clip", "crop_padding", "mixup",
                       "cutmix", "train_subset", "val_size", "test_subset", "gen_loss_weight")  # fmt: skip
        for name in nonnegative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.mix_prob <= 1:
            raise ValueError(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("patch_size", "dim", "depth", "heads", "mlp_dim", "image_size", "vocab_size", "palette_sample"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        task = TASKS[self.task]
        for name, off in task.not_applicable.items():  # a setting of another task is an error, not ignored
            if getattr(self, name) != off:
                raise ValueError(f"{name} does not apply to task {self.task!r}; set it to {off} (got {getattr(self, name)})")
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"init {self.init} is not a file (expected the checkpoint.npz of a training run)")
        backend.use_module(self.backend)  # an unknown backend, or CuPy without a GPU, fails here, before any work
        self.model_config()  # its config checks the model's shape, before any data is loaded
        return self


RECIPES = {
    # A first look in 10 minutes on 2 CPU cores: the cpu recipe (below) for 10 epochs.
    "quick": TrainConfig(model="mini", stem=3, stem_width=128, patch_size=1, epochs=10, lr=2e-3, warmup_epochs=1.0),
    # The plain mini ViT (patches straight from the pixels) for 2 epochs: what notebook 03 writes out by hand,
    # and the base of the paper-experiment tables (minivit/experiments.py).
    "plain-quick": TrainConfig(model="mini", epochs=2, warmup_epochs=0.3, lr=2e-3),
    # The CPU recipe (within 2 hours on 2 cores): the hybrid mini ViT, a 3-convolution stem of 32, 64 and 128
    # channels and 1×1 patches of its 4×4 map, whose 16 tokens make a step cheap enough for 60 epochs.
    "cpu": TrainConfig(model="mini", stem=3, stem_width=128, patch_size=1, epochs=60, lr=2e-3, warmup_epochs=1.0),
    # The GPU recipe (CuPy): ViT-Tiny width, 200 epochs, with the regularisers small-data ViTs need.
    "gpu": TrainConfig(
        model="tiny", backend="cupy", epochs=200, batch_size=256, lr=1e-3, warmup_epochs=10, mixup=0.8, cutmix=1.0,
        mix_prob=0.5,
    ),
    # iGPT's pretraining on 2 CPU cores: 16×16 images (256 tokens), the cpu preset, a palette of 512 colours;
    # flips only, no label smoothing. Test batches of 100: at 500, the (500, 4, 256, 256) attention scores
    # halve the test pass's speed.
    "igpt-cpu": TrainConfig(task="igpt", model="cpu", epochs=4, batch_size=64, lr=2e-3, warmup_epochs=0.5,
                            weight_decay=0.01, label_smoothing=0.0, crop_padding=0, eval_batch_size=100),  # fmt: skip
    # The paper-like run for one GPU (CuPy): 32×32 images (1,024 tokens), the gpu preset (8 blocks of width 512).
    "igpt-gpu": TrainConfig(task="igpt", model="gpu", backend="cupy", epochs=60, batch_size=64, lr=1e-3,
                            warmup_epochs=1.0, weight_decay=0.01, label_smoothing=0.0, crop_padding=0,
                            eval_batch_size=64),  # fmt: skip
    # iGPT classification on 2 CPU cores, from `--init runs/igpt-cpu.../checkpoint.npz` or, without it, from
    # scratch (the baseline at the same budget): the joint loss L_CLF + L_GEN, flips, 10,000 training images.
    "igpt-finetune-cpu": TrainConfig(task="finetune", model="cpu", epochs=2, batch_size=64, lr=1e-3,
                                     warmup_epochs=0.25, weight_decay=0.01, label_smoothing=0.0,
                                     gen_loss_weight=1.0, crop_padding=0, train_subset=10_000,
                                     eval_batch_size=100),  # fmt: skip
}


@functools.cache
def _model_config(config):
    task = TASKS[config.task]
    given = {f: getattr(config, f) for f in task.model_fields if getattr(config, f) is not None}
    return task.preset(config.model, get_spec(config.dataset).num_classes, **given)
