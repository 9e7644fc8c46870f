"""Training a ViT classifier on CIFAR: the loop, metrics, checkpoints and exact resume.

    result = train(RECIPES["quick"], run_dir="runs/quick", source="cifar-10-python.tar.gz")
    result = resume("runs/quick")                       # continues a stopped or killed run

Every random draw of a step (the shuffle of its epoch, its augmentation, its dropout masks and kept
patches) comes from generators seeded by (seed, stream, epoch, step). So the position in training is
all the random state there is: a run resumed from any checkpoint takes exactly the steps an
uninterrupted run would, and on NumPy ends with bit-identical parameters.

A run folder holds:
  config.json      the TrainConfig and the model's ViTConfig
  checkpoint.npz   model, optimiser (with the schedule's step), position, metrics so far; atomic,
                   written after every epoch and when stopped with Ctrl-C
  metrics.jsonl    one line per epoch: train and test loss and accuracy, learning rate, images/s, time
  curves.png       the learning curves
"""

import json
import math
import signal
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend, ops
from .data import augment, epoch_batches, load_cifar, normalize
from .data.cifar import get_spec
from .models import ViT, ViTConfig, preset
from .nn.module import atomic_file, save_npz
from .optim import AdamW, clip_grad_norm, warmup_cosine
from .viz import plot_curves


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (where the data lives is not part of it)."""

    dataset: str = "cifar10"
    model: str = "mini"  # a ViT preset; the fields below override it when set
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
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 2.0
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # global gradient norm; 0 turns clipping off
    label_smoothing: float = 0.1
    crop_padding: int = 4  # random crop after zero padding; 0 turns it off
    flip: bool = True
    mixup: float = 0.0  # Beta(α, α) of mixup; 0 turns it off
    cutmix: float = 0.0  # Beta(α, α) of CutMix; 0 turns it off
    mix_prob: float = 1.0  # share of batches mixed when mixup or cutmix is on
    train_subset: int = 0  # use only the first n training images (0: all)
    test_subset: int = 0  # evaluate on the first n test images (0: all)
    eval_batch_size: int = 500
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"

    def model_config(self, num_classes):
        overrides = {f: getattr(self, f) for f in ("patch_size", "dim", "depth", "heads", "mlp_dim", "pool", "dropout",
                                                    "patch_dropout", "stem", "stem_width")}  # fmt: skip
        return preset(self.model, num_classes=num_classes, **{k: v for k, v in overrides.items() if v is not None})

    def augment_options(self):
        """The keyword arguments of data.augment() for this run."""
        spec = get_spec(self.dataset)
        return {"num_classes": spec.num_classes, "mean": spec.mean, "std": spec.std, "crop_padding": self.crop_padding,
                "flip": self.flip, "mixup_alpha": self.mixup, "cutmix_alpha": self.cutmix,
                "mix_prob": self.mix_prob, "dtype": self.dtype}  # fmt: skip

    def check(self):
        """Raise ValueError naming the first field that cannot work."""
        get_spec(self.dataset)  # DataError for an unknown dataset
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        nonnegative = ("lr", "min_lr", "warmup_epochs", "weight_decay", "grad_clip", "crop_padding", "mixup",
                       "cutmix", "train_subset", "test_subset")  # fmt: skip
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
        for name in ("patch_size", "dim", "depth", "heads", "mlp_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        backend.use_module(self.backend)  # an unknown backend, or CuPy without a GPU, fails here, before any work
        ViT.from_config(self.model_config(get_spec(self.dataset).num_classes))  # checks the model's shape
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


def train(config, run_dir, data_dir=None, source=None, progress=True):
    """Start a new run in `run_dir` (which must not hold one yet). Returns the metrics history."""
    config = config.check()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.npz").exists():
        raise ValueError(f"{run_dir} already holds a run; resume it, or choose another run folder")
    data = load_cifar(config.dataset, data_dir=data_dir, source=source)
    model_config = config.model_config(len(data.classes))
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(run_dir / "config.json", json.dumps({"train": asdict(config), "model": asdict(model_config)}, indent=2))
    backend.seed(config.seed)  # the initial weights
    model = ViT.from_config(model_config).to(config.backend, config.dtype)
    state = {"epoch": 0, "step": 0, "sums": _epoch_sums(), "elapsed": 0.0, "history": []}
    return _run(config, model, _optimizer(config, model), state, data, run_dir, progress)


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
    data = load_cifar(config.dataset, data_dir=data_dir, source=source)
    return _run(config, model, optimizer, meta["state"], data, run_dir, progress)


def _epoch_sums():
    """Running totals over the epoch's training steps so far (part of the checkpoint's state)."""
    return {"loss": 0.0, "correct": 0, "seen": 0}


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
        model = ViT.from_config(ViTConfig(**meta["model"]))
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


def _run(config, model, optimizer, state, data, run_dir, progress):
    spec = get_spec(config.dataset)
    xp = backend.use_module(config.backend)
    for name, subset, available in (("train_subset", config.train_subset, len(data.train_images)),
                                    ("test_subset", config.test_subset, len(data.test_images))):  # fmt: skip
        if subset > available:
            raise ValueError(f"{name} {subset} is more than the {available} images there are")
    n_train = config.train_subset or len(data.train_images)
    n_test = config.test_subset or len(data.test_images)
    train_images = backend.to_device(data.train_images[:n_train], config.backend)
    train_labels = backend.to_device(data.train_labels[:n_train], config.backend)
    test_images, test_labels = data.test_images[:n_test], data.test_labels[:n_test]
    steps_per_epoch = n_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {n_train} training images")
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    aug = config.augment_options()
    meta = {"format": CHECKPOINT_FORMAT, "train": asdict(config), "model": asdict(model.config),
            "classes": list(data.classes), "mean": list(spec.mean), "std": list(spec.std)}  # fmt: skip

    def save_checkpoint():
        arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
        arrays |= {f"optim.{k}": v for k, v in optimizer.state_dict().items()}
        arrays["meta"] = np.array(json.dumps({**meta, "state": state}))
        save_npz(run_dir / "checkpoint.npz", arrays)
        _write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in state["history"]))

    stop = _CtrlC()
    with stop:
        while state["epoch"] < config.epochs:
            epoch, start = state["epoch"], state["step"]
            shuffle = np.random.default_rng(step_seed(config.seed, "shuffle", epoch))
            batches = epoch_batches(n_train, config.batch_size, shuffle)
            model.train()
            began = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.epochs}",
                       disable=not progress, leave=False, unit="step")  # fmt: skip
            for step in range(start, steps_per_epoch):
                rng = np.random.default_rng(step_seed(config.seed, "augment", epoch, step))
                backend.seed(step_seed(config.seed, "dropout", epoch, step))  # this step's masks and kept patches
                idx = xp.asarray(batches[step])
                x, targets = augment(train_images[idx], train_labels[idx], rng, **aug)
                optimizer.lr = warmup_cosine(optimizer.step_count, total_steps, warmup_steps, config.lr, config.min_lr)
                logits = model(x)
                loss, cache = ops.cross_entropy_forward(logits, targets, config.label_smoothing)
                loss = float(loss)
                model.zero_grad()
                model.backward(ops.cross_entropy_backward(cache))
                # the norm is needed anyway to catch a finite loss with non-finite gradients
                norm = clip_grad_norm(model.parameters(), config.grad_clip or math.inf)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    bar.close()
                    raise TrainingDiverged(_diverged(loss, norm, epoch, step, start, run_dir))
                optimizer.step()

                hard = targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
                sums = state["sums"]
                sums["loss"] += loss * len(idx)
                sums["correct"] += int((xp.argmax(logits, axis=1) == hard).sum())
                sums["seen"] += len(idx)
                state["step"] = step + 1
                bar.update(1)
                rate = (step + 1 - start) * config.batch_size / (time.perf_counter() - began)
                bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}",
                                img_s=f"{rate:.0f}")  # fmt: skip
                if stop.requested:
                    bar.close()
                    state["elapsed"] += time.perf_counter() - began
                    save_checkpoint()
                    raise Interrupted(f"stopped at epoch {epoch + 1}, step {step + 1}. {_resume_hint(run_dir)}")
            bar.close()
            train_time = time.perf_counter() - began
            test = evaluate(model, test_images, test_labels, spec.mean, spec.std, config.eval_batch_size)
            state["elapsed"] += time.perf_counter() - began
            sums = state["sums"]
            state["history"].append({
                "epoch": epoch + 1, "train_loss": sums["loss"] / sums["seen"],
                "train_accuracy": sums["correct"] / sums["seen"],
                "test_loss": test["loss"], "test_accuracy": test["accuracy"], "lr": optimizer.lr,
                "images_per_s": (steps_per_epoch - start) * config.batch_size / train_time,
                "epoch_time_s": time.perf_counter() - began, "elapsed_s": state["elapsed"],
            })  # fmt: skip
            state.update(epoch=epoch + 1, step=0, sums=_epoch_sums())
            save_checkpoint()
            _plot(state["history"], run_dir / "curves.png")
            m = state["history"][-1]
            tqdm.write(
                f"epoch {m['epoch']}/{config.epochs}  train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f}"
                f"  test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f}  lr {m['lr']:.2e}"
                f"  {m['images_per_s']:.0f} img/s  {m['epoch_time_s']:.0f} s"
            )
            if stop.requested and state["epoch"] < config.epochs:
                raise Interrupted(f"stopped after epoch {epoch + 1}. {_resume_hint(run_dir)}")
    return state["history"]


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


def _write_text(path, text):
    with atomic_file(path) as f:
        f.write(text.encode())


def _plot(history, path):
    with atomic_file(path, suffix=".png") as f:
        plot_curves(history).savefig(f, dpi=100, format="png")

