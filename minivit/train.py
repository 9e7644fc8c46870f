"""One training loop for every task: metrics, checkpoints and exact resume.

    result = train(RECIPES["quick"], run_dir="runs/quick", source="cifar-10-python.tar.gz")
    result = resume("runs/quick")                       # continues a stopped or killed run
    result = train(RECIPES["igpt-cpu"], run_dir="runs/igpt")   # iGPT's next-pixel pretraining
    result = train(replace(RECIPES["igpt-finetune-cpu"], init="runs/igpt/checkpoint.npz"), "runs/ft")

A task (TrainConfig.task) is what differs between runs: its model, how a batch becomes a loss and
its gradients, and how it is evaluated. `Classify` below is the ViT classifier of the paper;
`minivit.tasks.igpt.Pretrain` is iGPT's generative pretraining and `Finetune` its classification
(from a pretraining checkpoint, TrainConfig.init, or from scratch). The loop around them (schedule,
clipping, NaN guard, progress, checkpoints, resume, metrics, curves) is the same for all.

Every random draw of a step (the shuffle of its epoch, its augmentation, its dropout masks and kept
patches) comes from generators seeded by (seed, stream, epoch, step). So the position in training is
all the random state there is: a run resumed from any checkpoint takes exactly the steps an
uninterrupted run would, and on NumPy ends with bit-identical parameters.

A run folder holds:
  config.json      the TrainConfig and the model's config
  checkpoint.npz   model, optimiser (with the schedule's step), position, metrics so far, and what
                   the task needs to go on (iGPT: its palette); atomic, written after every epoch
                   and when stopped with Ctrl-C
  metrics.jsonl    one line per epoch: train and test loss (and accuracy), learning rate, images/s, time
  curves.png       the learning curves
"""

import json
import math
import platform
import signal
import subprocess
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend, ops
from .atomic import atomic_file, save_npz, write_text
from .data import augment, epoch_batches, load_cifar, normalize, split
from .data.cifar import get_spec
from .data.resize import resize
from .models import ViT, preset
from .optim import AdamW, clip_grad_norm, warmup_cosine
from .tasks import ClassificationMetrics, eval_parts
from .tasks.igpt import Finetune, Pretrain
from .tasks.masked_patches import MaskedPatches
from .viz import plot_curves


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (where the data lives is not part of it)."""

    task: str = "classify"  # one of TASKS: "classify" (a ViT), "igpt", "finetune" (iGPT's), "mpp" (masked patches)
    init: str | None = None  # a checkpoint.npz whose model weights the run starts from (fine-tuning); None: random
    dataset: str = "cifar10"
    model: str = "mini"  # a preset of the task's model (ViT: tiny, mini; iGPT: cpu, gpu); fields below override it
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

    def model_config(self, num_classes):
        """The config of the model this run trains (a ViTConfig, or an IGPTConfig for task "igpt")."""
        task = TASKS[self.task]
        given = {f: getattr(self, f) for f in task.model_fields if getattr(self, f) is not None}
        return task.preset(self.model, num_classes, **given)

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
        task.model_class.from_config(self.model_config(get_spec(self.dataset).num_classes))  # checks the model's shape
        return self


RECIPES = {
    # A first look: 9 minutes on 2 CPU cores, 44.9 % test accuracy (measured, see the README).
    "quick": TrainConfig(model="mini", epochs=2, warmup_epochs=0.3, lr=2e-3),
    # The CPU recipe: 110 minutes on 2 cores, 83.7 % (measured). The hybrid mini ViT (a 3-convolution
    # stem of 32, 64 and 128 channels, 1×1 patches of its 4×4 map): its 16 tokens make a step cheap enough
    # for 60 epochs. Short schedules learn fastest without mixup.
    "cpu": TrainConfig(model="mini", stem=3, stem_width=128, patch_size=1, epochs=60, lr=2e-3, warmup_epochs=1.0),
    # The GPU recipe (CuPy): ViT-Tiny width, 200 epochs, with the regularisers small-data ViTs need.
    "gpu": TrainConfig(
        model="tiny", backend="cupy", epochs=200, batch_size=256, lr=1e-3, warmup_epochs=10, mixup=0.8, cutmix=1.0,
        mix_prob=0.5,
    ),
    # iGPT's pretraining on 2 CPU cores: 16×16 images (256 tokens), the cpu preset (4 blocks of width 128),
    # a palette of 512 colours; flips only, no label smoothing. About 23 minutes an epoch on a quiet machine
    # (39-41 images/s, and the test pass), 4 epochs in about 91 minutes: 2.820 nats per token (the README).
    # Test batches of 100: at 500, the (500, 4, 256, 256) attention scores halve the test pass's speed.
    "igpt-cpu": TrainConfig(task="igpt", model="cpu", epochs=4, batch_size=64, lr=2e-3, warmup_epochs=0.5,
                            weight_decay=0.01, label_smoothing=0.0, crop_padding=0, eval_batch_size=100),  # fmt: skip
    # The paper-like run for one GPU (CuPy): 32×32 images (1,024 tokens), the gpu preset (8 blocks of width 512).
    "igpt-gpu": TrainConfig(task="igpt", model="gpu", backend="cupy", epochs=60, batch_size=64, lr=1e-3,
                            warmup_epochs=1.0, weight_decay=0.01, label_smoothing=0.0, crop_padding=0,
                            eval_batch_size=64),  # fmt: skip
    # iGPT classification on 2 CPU cores, from `--init runs/igpt-cpu.../checkpoint.npz` or, without it, from
    # scratch (the baseline at the same budget): the joint loss L_CLF + L_GEN, flips; see the README for
    # what it measured. 10,000 training images for 2 epochs: 12-13 minutes with the test passes (an epoch
    # measured 340-371 s on 2 AMD EPYC cores).
    "igpt-finetune-cpu": TrainConfig(task="finetune", model="cpu", epochs=2, batch_size=64, lr=1e-3,
                                     warmup_epochs=0.25, weight_decay=0.01, label_smoothing=0.0,
                                     gen_loss_weight=1.0, crop_padding=0, train_subset=10_000,
                                     eval_batch_size=100),  # fmt: skip
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint."""


class Interrupted(Exception):
    """Stopped by Ctrl-C after a checkpoint was written; `resume(run_dir)` continues."""


# The training state a checkpoint holds; 2: named running sums, and seeds keyed by stream.
CHECKPOINT_FORMAT = 2
STREAMS = ("shuffle", "augment", "dropout")  # the random streams of a run, each seeded per position


def step_seed(seed, stream, epoch, step=0):
    """One integer seed for `stream` (one of STREAMS) at (epoch, step) of a run seeded `seed`.

    The key always has four numbers: SeedSequence pads a key with zeros, so keys of different
    lengths, such as (seed, epoch) and (seed, epoch, 0), would give two streams the same numbers.
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    return int(np.random.SeedSequence((seed, STREAMS.index(stream), epoch, step)).generate_state(1)[0])


class Classify(ClassificationMetrics):
    """The paper's task: a ViT classifies CIFAR images (augmented), trained with cross-entropy.

    What every task gives the loop: `model_class`, `preset`, `model_fields` and `not_applicable`
    (for TrainConfig), and, built from the config and the dataset, `num_train`, `train_step`,
    `evaluate(model, part)` (part "val" or "test", each in `eval_parts`), `epoch_metrics`, `summary`, `sums`,
    `meta` and `arrays` (extra checkpoint contents). `data` is the run's data.Split.
    """

    model_class = ViT
    model_fields = ("image_size", "patch_size", "dim", "depth", "heads", "mlp_dim", "pool", "dropout", "patch_dropout",
                    "stem", "stem_width", "pos_embed", "pos_place")  # fmt: skip
    not_applicable = {"vocab_size": None, "palette_sample": None, "gen_loss_weight": 0.0}

    @staticmethod
    def preset(name, num_classes, **overrides):
        return preset(name, num_classes=num_classes, **overrides)

    def __init__(self, config, data, arrays=None):
        spec = get_spec(config.dataset)
        self.config, self.spec = config, spec
        self.num_train = len(data.train_images)
        size = config.model_config(spec.num_classes).image_size  # the dataset's side unless a resolution is set
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

    def train_step(self, model, idx, rng):
        """Forward, loss and backward of one batch (idx: its image indices). returns loss, {sums}"""
        xp = backend.array_module(idx)
        x, targets = augment(self.train_images[idx], self.train_labels[idx], rng, **self.aug)
        logits = model(x)
        loss, cache = ops.cross_entropy_forward(logits, targets, self.config.label_smoothing)
        model.backward(ops.cross_entropy_backward(cache))
        hard = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
        return loss, {"correct": int((xp.argmax(logits, axis=1) == hard).sum())}

    def evaluate(self, model, part):
        images, labels = self.eval_sets[part]
        metrics = evaluate(model, images, labels, self.spec.mean, self.spec.std, self.config.eval_batch_size)
        return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}


TASKS = {"classify": Classify, "igpt": Pretrain, "finetune": Finetune, "mpp": MaskedPatches}
# Fields of a model config that may differ between a checkpoint and a run that starts from it: the
# regularisers, and the classes (which shape only the head).
MAY_DIFFER = ("dropout", "patch_dropout", "num_classes")


def train(config, run_dir, data_dir=None, source=None, progress=True):
    """Start a new run in `run_dir` (which must not hold one yet). Returns the metrics history."""
    config = config.check()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.npz").exists():
        raise ValueError(f"{run_dir} already holds a run; resume it, or choose another run folder")
    data = _split(config, load_cifar(config.dataset, data_dir=data_dir, source=source))
    model_config = config.model_config(len(data.classes))
    init, _, init_arrays = load_checkpoint(config.init) if config.init else (None, None, None)
    task = TASKS[config.task](config, data, init_arrays)  # iGPT's tasks take the init checkpoint's palette
    backend.seed(config.seed)  # the initial weights
    model = task.model_class.from_config(model_config)
    if init is not None:
        _start_from(model, init, config.init)
    model.to(config.backend, config.dtype)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.json", json.dumps({"train": asdict(config), "model": asdict(model_config)}, indent=2))
    state = {"epoch": 0, "step": 0, "sums": _epoch_sums(task), "elapsed": 0.0, "history": []}
    return _run(config, task, model, _optimizer(config, model), state, run_dir, progress)


def resume(run_dir, data_dir=None, source=None, progress=True):
    """Continue the run in `run_dir` from its checkpoint. Returns the metrics history."""
    run_dir = Path(run_dir)
    if run_dir.name == "checkpoint.npz" and run_dir.is_file():
        run_dir = run_dir.parent
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint.npz to resume from")
    model, meta, arrays = load_checkpoint(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} holds a training state of format {meta.get('format', 1)}, this minivit resumes format "
            f"{CHECKPOINT_FORMAT} only; start a new run (evaluate and predict still read the model)"
        )
    try:
        config = TrainConfig(**meta["train"])
    except TypeError as e:
        raise ValueError(f"{path} was written with other training settings than this version knows ({e})") from e
    model.to(config.backend, config.dtype)
    optimizer = _optimizer(config, model)
    optimizer.load_state_dict({k[len("optim.") :]: v for k, v in arrays.items() if k.startswith("optim.")})
    data = _split(config, load_cifar(config.dataset, data_dir=data_dir, source=source))
    task = TASKS[config.task](config, data, arrays)
    return _run(config, task, model, optimizer, meta["state"], run_dir, progress)


def _start_from(model, init, path):
    """Copy into `model` every parameter of `init` (a checkpoint's model of the same architecture) that
    it has, of the same shape. Parameters only `model` has (iGPT fine-tuning's classification head)
    keep their initialisation; a head for other classes than the checkpoint's (a classifier from
    masked patch prediction's 512 colours) starts at zero, as in the paper's fine-tuning. A ViT at another
    image size is resized first (ViT.resize)."""
    if not isinstance(model.config, type(init.config)) and not isinstance(init.config, type(model.config)):
        raise ValueError(f"this run's {type(model).__name__} cannot start from init {path}, which holds "
                         f"{type(init).__name__} weights")  # fmt: skip
    if init.config.image_size != model.config.image_size and hasattr(init, "resize"):
        init = init.resize(model.config.image_size)  # a ViT at a new resolution (Sec. 3.2): E_pos interpolated
    shared = asdict(init.config).keys() & asdict(model.config).keys()
    differ = [f"{name} {getattr(init.config, name)} there, {getattr(model.config, name)} here" for name in sorted(shared)
              if name not in MAY_DIFFER and getattr(model.config, name) != getattr(init.config, name)]  # fmt: skip
    if differ:
        raise ValueError(f"init {path} holds another architecture than this run's: {'; '.join(differ)}")
    state, given = model.state_dict(), init.state_dict()
    for name, value in state.items():
        if name in given:
            state[name] = given[name] if given[name].shape == value.shape else np.zeros_like(value)
    model.load_state_dict(state)


def _split(config, data):
    return split(data, config.train_subset, config.val_size, config.test_subset)


def _epoch_sums(task):
    """Running totals over the epoch's training steps so far (part of the checkpoint's state)."""
    return {"loss": 0.0, **{name: 0 for name in task.sums}, "seen": 0}


def _optimizer(config, model):
    return AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def load_checkpoint(path):
    """(model on NumPy, meta dict, all arrays) from a checkpoint.npz written by training."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the checkpoint.npz of a training run)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        model_class = TASKS[meta["train"].get("task", "classify")].model_class
        model = model_class.from_config(model_class.config_class(**meta["model"]))
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a minivit checkpoint of this version ({e})") from e
    model.load_state_dict({k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")})
    return model, meta, arrays


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


def _run(config, task, model, optimizer, state, run_dir, progress):
    xp = backend.use_module(config.backend)
    steps_per_epoch = task.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {task.num_train} training images")
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    meta = {"format": CHECKPOINT_FORMAT, "train": asdict(config), "model": asdict(model.config), **task.meta}
    # Every version and machine that trained part of the run: float32 training is chaotic, and another CPU's
    # BLAS kernels round differently, so a run repeats its bits on the same kind of machine only.
    version, code = f"{code_version()} on {cpu_name()}", state.setdefault("code", [])
    if code[-1:] != [version]:
        code.append(version)

    def save_checkpoint():
        arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
        arrays |= {f"optim.{k}": v for k, v in optimizer.state_dict().items()}
        arrays |= task.arrays
        arrays["meta"] = np.array(json.dumps({**meta, "state": state}))
        save_npz(run_dir / "checkpoint.npz", arrays)
        write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in state["history"]))

    stop = _CtrlC()
    with stop:
        while state["epoch"] < config.epochs:
            epoch, start = state["epoch"], state["step"]
            shuffle = np.random.default_rng(step_seed(config.seed, "shuffle", epoch))
            batches = epoch_batches(task.num_train, config.batch_size, shuffle)
            model.train()
            began = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.epochs}",
                       disable=not progress, leave=False, unit="step")  # fmt: skip
            for step in range(start, steps_per_epoch):
                rng = np.random.default_rng(step_seed(config.seed, "augment", epoch, step))
                backend.seed(step_seed(config.seed, "dropout", epoch, step))  # this step's masks and kept patches
                idx = xp.asarray(batches[step])
                optimizer.lr = warmup_cosine(optimizer.step_count, total_steps, warmup_steps, config.lr, config.min_lr)
                model.zero_grad()
                loss, counts = task.train_step(model, idx, rng)  # forward, loss, backward
                loss = float(loss)
                # the norm is needed anyway to catch a finite loss with non-finite gradients
                norm = clip_grad_norm(model.parameters(), config.grad_clip or math.inf)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    bar.close()
                    raise TrainingDiverged(_diverged(loss, norm, epoch, step, start, run_dir))
                optimizer.step()

                sums = state["sums"]
                sums["loss"] += loss * len(idx)
                for name, count in counts.items():
                    sums[name] += count
                sums["seen"] += len(idx)
                state["step"] = step + 1
                bar.update(1)
                rate = (step + 1 - start) * config.batch_size / (time.perf_counter() - began)
                shown = {k.removeprefix("train_"): f"{v:.3f}" for k, v in task.epoch_metrics(sums).items()}
                bar.set_postfix(**shown, img_s=f"{rate:.0f}")
                if stop.requested:
                    bar.close()
                    state["elapsed"] += time.perf_counter() - began
                    save_checkpoint()
                    raise Interrupted(f"stopped at epoch {epoch + 1}, step {step + 1}. {_resume_hint(run_dir)}")
            bar.close()
            train_time = time.perf_counter() - began
            scores = {f"{part}_{k}": v for part in task.eval_parts for k, v in task.evaluate(model, part).items()}
            state["elapsed"] += time.perf_counter() - began
            state["history"].append({
                "epoch": epoch + 1, **task.epoch_metrics(state["sums"]), **scores, "lr": optimizer.lr,
                "images_per_s": (steps_per_epoch - start) * config.batch_size / train_time,
                "epoch_time_s": time.perf_counter() - began, "elapsed_s": state["elapsed"],
            })  # fmt: skip
            state.update(epoch=epoch + 1, step=0, sums=_epoch_sums(task))
            save_checkpoint()
            _plot(state["history"], run_dir / "curves.png", task.meta.get("baselines"))
            m = state["history"][-1]
            tqdm.write(f"epoch {m['epoch']}/{config.epochs}  {task.summary(m)}  lr {m['lr']:.2e}"
                       f"  {m['images_per_s']:.0f} img/s  {m['epoch_time_s']:.0f} s")  # fmt: skip
            if stop.requested and state["epoch"] < config.epochs:
                raise Interrupted(f"stopped after epoch {epoch + 1}. {_resume_hint(run_dir)}")
    return state["history"]


def code_version():
    """The git commit of the minivit that runs (with "+changes" when its files differ from that commit), so a
    figure can name the code that measured it; "unknown" outside a git checkout of minivit (an installed copy)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "minivit"], cwd=root,
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + "+changes" * bool(changed)


def cpu_name():
    """The CPU's model name (as `lscpu` shows it), or the platform's processor name where /proc has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _diverged(loss, norm, epoch, step, start, run_dir):
    what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {norm}"
    saved = run_dir / "checkpoint.npz"
    kept = (f"{saved} keeps the last good state ({epoch} epochs and {start} steps done)" if saved.exists()
            else "no checkpoint had been written yet")  # fmt: skip
    return (f"{what} at epoch {epoch + 1}, step {step + 1}; stopped before the update. {kept}. Start a new run "
            "with a lower learning rate or a longer warmup (resuming would repeat the same steps).")  # fmt: skip


def _resume_hint(run_dir):
    return (
        f"The checkpoint is saved; continue with: python -m minivit train --resume {run_dir}"
        f" (or minivit.train.resume({str(run_dir)!r}) in Python)"
    )


class _CtrlC:
    """While active, the first Ctrl-C asks the loop to stop after the current step (the checkpoint
    then holds a consistent state); a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us here anyway
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("stopping after this step (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _plot(history, path, baselines=None):
    with atomic_file(path, suffix=".png") as f:
        plot_curves(history, baselines).savefig(f, dpi=100, format="png")

