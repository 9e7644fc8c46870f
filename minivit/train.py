"""One training loop for every task: metrics, checkpoints and exact resume.

    result = train(RECIPES["quick"], run_dir="runs/quick", source="cifar-10-python.tar.gz")
    result = resume("runs/quick")                       # continues a stopped or killed run
    result = train(RECIPES["igpt-cpu"], run_dir="runs/igpt")   # iGPT's next-pixel pretraining
    result = train(replace(RECIPES["igpt-finetune-cpu"], init="runs/igpt/checkpoint.npz"), "runs/ft")

A task (TrainConfig.task, minivit/tasks) is what differs between runs: its model, how a batch becomes a
loss and its gradients, and how it is evaluated: the ViT classifier of the paper (tasks/classify.py),
iGPT's pretraining and fine-tuning (tasks/igpt.py), masked patch prediction (tasks/masked_patches.py).
The loop here (schedule, clipping, NaN guard, progress, checkpoints, resume, metrics, curves) is the
same for all. What a run computes is config.py's TrainConfig; what a checkpoint holds, checkpoint.py.

Every random draw of a step (the shuffle of its epoch, its augmentation, its dropout masks and kept
patches) comes from generators seeded by (seed, stream, epoch, step). So the position in training is
all the random state there is: a run resumed from any checkpoint takes exactly the steps an
uninterrupted run would, and on NumPy ends with bit-identical parameters.

A run folder holds:
  config.json      the TrainConfig and the model's config
  checkpoint.npz   model, optimiser, position, metrics so far, what the task needs to go on (iGPT: its
                   palette); atomic, written after every epoch and when stopped with Ctrl-C
  metrics.jsonl    one line per epoch: train and test loss (and accuracy), learning rate, images/s, time
  curves.png       the learning curves
"""

import json
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend, distributed
from .atomic import atomic_file, write_text
from .checkpoint import (
    CHECKPOINT_FORMAT,
    code_version,
    cpu_name,
    load_checkpoint,
    run_config,
    save_checkpoint,
    start_from,
)
from .config import RECIPES, TrainConfig  # noqa: F401  (`from minivit.train import RECIPES, TrainConfig`: users' code)
from .data import epoch_batches, load_cifar, split
from .optim import AdamW, clip_grad_norm, warmup_cosine
from .tasks import TASKS


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint."""


class Interrupted(Exception):
    """Stopped by Ctrl-C after a checkpoint was written; `resume(run_dir)` continues."""


STREAMS = ("shuffle", "augment", "dropout")  # the random streams of a run, each seeded per position


def step_seed(seed, stream, epoch, step=0):
    """One integer seed for `stream` (one of STREAMS) at (epoch, step) of a run seeded `seed`.

    The key always has four numbers: SeedSequence pads a key with zeros, so keys of different
    lengths, such as (seed, epoch) and (seed, epoch, 0), would give two streams the same numbers.
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    return int(np.random.SeedSequence((seed, STREAMS.index(stream), epoch, step)).generate_state(1)[0])


def train(config, run_dir, data_dir=None, source=None, progress=True, callbacks=()):
    """Start a new run in `run_dir` (which must not hold one yet). Returns the metrics history.

    callbacks: functions called as f(epoch, step) after each step's update (both counted from 1), before
    the loop looks for a Ctrl-C: a test's or a notebook's way in, e.g. to press Ctrl-C at a given step.
    """
    config = config.check()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.npz").exists():
        raise ValueError(f"{run_dir} already holds a run; resume it, or choose another run folder")
    data = _split(config, load_cifar(config.dataset, data_dir=data_dir, source=source))
    init, _, init_arrays = load_checkpoint(config.init) if config.init else (None, None, None)
    task = TASKS[config.task](config, data, init_arrays)  # iGPT's tasks take the init checkpoint's palette
    backend.seed(config.seed)  # the initial weights
    model_config = config.model_config()
    model = task.model_for(model_config).from_config(model_config)
    if init is not None:
        start_from(model, init, config.init)
    model.to(config.backend, config.dtype)
    if distributed.world().rank == 0:  # the one process that writes the run folder
        run_dir.mkdir(parents=True, exist_ok=True)
        config_json = {"train": asdict(config), "model": asdict(model.config)}
        write_text(run_dir / "config.json", json.dumps(config_json, indent=2))
    state = {"epoch": 0, "step": 0, "sums": _epoch_sums(task), "elapsed": 0.0, "history": []}
    return _run(config, task, model, _optimizer(config, model), state, run_dir, progress, callbacks)


def resume(run_dir, data_dir=None, source=None, progress=True, callbacks=()):
    """Continue the run in `run_dir` (or of the checkpoint.npz it names) from its checkpoint. Returns the
    metrics history."""
    run_dir = run_folder(run_dir)
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint.npz to resume from")
    model, meta, arrays = load_checkpoint(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} holds a training state of format {meta.get('format', 1)}, this minivit resumes format "
            f"{CHECKPOINT_FORMAT} only; start a new run (evaluate and predict still read the model)"
        )
    config = run_config(meta, path)
    model.to(config.backend, config.dtype)
    optimizer = _optimizer(config, model)
    optimizer.load_state_dict({k[len("optim.") :]: v for k, v in arrays.items() if k.startswith("optim.")})
    data = _split(config, load_cifar(config.dataset, data_dir=data_dir, source=source))
    task = TASKS[config.task](config, data, arrays)
    return _run(config, task, model, optimizer, meta["state"], run_dir, progress, callbacks)


def run_folder(path):
    """The run folder a path names: the folder itself, or the folder of the checkpoint.npz it names."""
    path = Path(path)
    return path.parent if path.name == "checkpoint.npz" and path.is_file() else path


def _split(config, data):
    return split(data, config.train_subset, config.val_size, config.test_subset)


def _epoch_sums(task):
    """Running totals over the epoch's training steps so far (part of the checkpoint's state)."""
    return {"loss": 0.0, **{name: 0 for name in task.sums}, "seen": 0}


def _optimizer(config, model):
    return AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _run(config, task, model, optimizer, state, run_dir, progress, callbacks):
    xp = backend.use_module(config.backend)
    world = distributed.world()  # the processes that train this model together (one without mpiexec)
    if world.size > 1 and not task.data_parallel:
        raise ValueError(f"task {config.task!r} ({task.description}) trains on one process only; run it without "
                         f"mpiexec (it was started on {world.size})")  # fmt: skip
    if config.batch_size < world.size:
        raise ValueError(f"batch_size {config.batch_size} gives some of the {world.size} processes no images; "
                         f"use at least {world.size}")  # fmt: skip
    for part in task.eval_parts if world.size > 1 else ():
        if task.eval_size(part) < world.size:
            raise ValueError(f"the {task.eval_size(part)} {part} images leave some of the {world.size} processes "
                             "none to score")  # fmt: skip
    steps_per_epoch = task.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {task.num_train} training images")
    progress = progress and world.rank == 0
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    meta = {"format": CHECKPOINT_FORMAT, "train": asdict(config), "model": asdict(model.config),
            "model_class": type(model).__name__, **task.meta}  # fmt: skip
    # Every version and machine that trained part of the run: float32 training is chaotic, and another CPU's
    # BLAS kernels round differently, so a run repeats its bits on the same kind of machine only.
    version, code = f"{code_version()} on {cpu_name()}", state.setdefault("code", [])
    if code[-1:] != [version]:
        code.append(version)

    def save():
        if world.rank == 0:
            save_checkpoint(run_dir / "checkpoint.npz", model, optimizer, task, {**meta, "state": state})
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
                idx = xp.asarray(batches[step])
                rows = world.rows(len(idx))  # this process's rows of the batch (all of them on one process)
                backend.seed(step_seed(config.seed, "dropout", epoch, step))  # this step's masks and kept patches
                optimizer.lr = warmup_cosine(optimizer.step_count, total_steps, warmup_steps, config.lr, config.min_lr)
                model.zero_grad()
                with distributed.drawing_rows(xp, rows, len(idx)):  # masks drawn for every row of the batch
                    loss, counts = task.train_step(model, idx, rng, rows)  # forward, this process's loss share, backward
                world.sum_gradients(model.parameters())  # the whole batch's gradients, on every process
                loss, *summed = world.sum([float(loss), *counts.values()])
                counts = dict(zip(counts, map(round, summed), strict=True))
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
                for callback in callbacks:
                    callback(epoch + 1, step + 1)
                if world.sum([stop.requested])[0]:  # Ctrl-C reached any process: all stop after this step
                    bar.close()
                    state["elapsed"] += time.perf_counter() - began
                    save()
                    raise Interrupted(f"stopped at epoch {epoch + 1}, step {step + 1}. {_resume_hint(run_dir)}")
            bar.close()
            train_time = time.perf_counter() - began
            scores = {f"{part}_{k}": v for part in task.eval_parts for k, v in _evaluate(task, model, part, world).items()}
            state["elapsed"] += time.perf_counter() - began
            state["history"].append({
                "epoch": epoch + 1, **task.epoch_metrics(state["sums"]), **scores, "lr": optimizer.lr,
                "images_per_s": (steps_per_epoch - start) * config.batch_size / train_time,
                "epoch_time_s": time.perf_counter() - began, "elapsed_s": state["elapsed"],
            })  # fmt: skip
            state.update(epoch=epoch + 1, step=0, sums=_epoch_sums(task))
            save()
            if world.rank == 0:
                _plot_curves(state["history"], run_dir / "curves.png", task.meta.get("baselines"))
                m = state["history"][-1]
                tqdm.write(f"epoch {m['epoch']}/{config.epochs}  {task.summary(m)}  lr {m['lr']:.2e}"
                           f"  {m['images_per_s']:.0f} img/s  {m['epoch_time_s']:.0f} s")  # fmt: skip
            if world.sum([stop.requested])[0] and state["epoch"] < config.epochs:
                raise Interrupted(f"stopped after epoch {epoch + 1}. {_resume_hint(run_dir)}")
    return state["history"]


def _evaluate(task, model, part, world):
    """A part's metrics. On several processes each scores its block of the part's images and the means
    are combined, weighted by the blocks' sizes."""
    if world.size == 1:
        return {k: v for k, v in task.evaluate(model, part).items() if k != "predictions"}
    size = task.eval_size(part)
    rows = world.rows(size)
    mine = {k: v for k, v in task.evaluate(model, part, rows).items() if k != "predictions"}
    count = len(range(size)[rows])
    return dict(zip(mine, (s / size for s in world.sum([v * count for v in mine.values()])), strict=True))


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


def _plot_curves(history, path, baselines=None):
    from .viz import (
        plot_curves,  # matplotlib is loaded only when a run writes its curves
    )

    with atomic_file(path, suffix=".png") as f:
        plot_curves(history, baselines).savefig(f, dpi=100, format="png")

