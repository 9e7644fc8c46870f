"""The command line: `python -m minivit train | evaluate | predict | sample | probe | experiment`.

    python -m minivit train                            # the default recipe on CIFAR-10
    python -m minivit train --recipe quick             # a first look, ~10 minutes on 2 CPU cores
    python -m minivit train --resume runs/cpu-...      # continue a stopped run
    python -m minivit train --task igpt                # iGPT's pretraining (the igpt-cpu recipe)
    python -m minivit evaluate runs/cpu-.../checkpoint.npz
    python -m minivit predict runs/cpu-.../checkpoint.npz cat.png
    python -m minivit sample runs/igpt-cpu-.../checkpoint.npz --out samples.png
    python -m minivit probe runs/igpt-cpu-.../checkpoint.npz   # linear probes of every layer
    python -m minivit train --recipe igpt-finetune-cpu --init runs/igpt-cpu-.../checkpoint.npz
    python -m minivit experiment pos-embed                       # a table of the ViT paper's, resumable
"""

import argparse
import json
import os
import sys
import time
import types
import typing
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from . import backend, distributed, experiments
from .atomic import atomic_file
from .checkpoint import load_checkpoint, run_config
from .config import RECIPES, TrainConfig
from .data import DataError, load_cifar, split
from .probe import L2_GRID, best_layer, compare
from .tasks import TASKS, best_epoch, of_checkpoint
from .tasks.igpt import tokenize
from .train import Interrupted, TrainingDiverged, resume, run_folder, train

HELP = {
    "task": "classify (a ViT), igpt (iGPT's next-pixel pretraining), finetune (iGPT classification) or mpp (the "
            "ViT's masked patch prediction)",
    "init": "a checkpoint.npz to start from (its model weights, and an iGPT's palette); default: random weights",
    "dataset": "cifar10 or cifar100",
    "model": "the task's preset (ViT: tiny, mini; the ResNet baseline: resnet-mini, resnet-tiny; iGPT: cpu, gpu); the "
             "model flags override its fields",
    "image_size": "iGPT: images are area-averaged to this (T = image_size² tokens); ViT: resized (bilinear) to it",
    "vocab_size": "iGPT: the palette's number of colours K",
    "palette_sample": "iGPT: pixels the palette's k-means is fitted on (default 200000)",
    "patch_dropout": "share of patch tokens each image drops while training (PatchDropout; 0: off)",
    "stem": "3×3 stride-2 convolutions before the patches (the paper's hybrid; 0: off)",
    "stem_width": "channels of the stem's last convolution, each earlier one half as many (0: dim/2)",
    "pos_embed": "ViT position embedding: 1d (learned, per position), 2d (learned row and column halves), none, or "
                 "relative (a learned key per offset in every block's attention)",
    "pos_place": "where it is added: input (Eq. 1), every-layer (one per block) or every-layer-shared (one for all)",
    "epochs": "number of epochs",
    "batch_size": "images per step",
    "lr": "peak learning rate (AdamW), reached after warmup",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_epochs": "linear warmup length, in epochs (may be fractional)",
    "weight_decay": "AdamW's decoupled weight decay (not on biases, norms, cls, pos)",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "label_smoothing": "ε of label smoothing",
    "gen_loss_weight": "finetune: w of the joint loss L_CLF + w L_GEN (0: classification loss only)",
    "crop_padding": "random crop after this much zero padding (0: off)",
    "flip": "random horizontal flips",
    "mixup": "mixup's Beta(α, α) (0: off)",
    "cutmix": "CutMix's Beta(α, α) (0: off)",
    "mix_prob": "share of batches that mixup/CutMix apply to",
    "train_subset": "train on the first N images only (0: all but the validation images)",
    "val_size": "hold out the last N training images, never trained on, to choose epochs and settings on (0: none)",
    "test_subset": "evaluate on the first N test images only (0: all)",
    "eval_batch_size": "images per evaluation step",
    "seed": "seed for initialisation, shuffling, augmentation and dropout",
    "backend": "numpy or cupy",
    "dtype": "float32 or float64",
}


def _add_data_flags(parser):
    parser.add_argument("--data-dir", type=Path, help="where datasets are cached (default: $MINIVIT_DATA or ~/.cache/minivit)")
    parser.add_argument("--archive", type=Path,
                        help="a local cifar-*-python.tar.gz or its unpacked folder, read instead of downloading")  # fmt: skip


def _field_type(f):
    """int | None -> int, for argparse."""
    if isinstance(f.type, types.UnionType):
        return next(t for t in typing.get_args(f.type) if t is not type(None))
    return f.type


def _recipes_help():
    default = TrainConfig()
    lines = ["recipes (fields that differ from the defaults below):"]
    for name, recipe in RECIPES.items():
        changed = [f"{f.name}={getattr(recipe, f.name)}" for f in fields(TrainConfig)
                   if getattr(recipe, f.name) != getattr(default, f.name)]  # fmt: skip
        lines.append(f"  {name:<8} {' '.join(changed)}")
    shown = [f"{f.name}={getattr(default, f.name)}" for f in fields(TrainConfig) if getattr(default, f.name) is not None]
    lines.append("defaults: " + " ".join(shown))
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minivit", description="Train and use ViTs written in NumPy/CuPy.",
                                     epilog="Errors print one line; set MINIVIT_TRACEBACK=1 for the full traceback.",
                                     allow_abbrev=False)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a ViT (or pretrain an iGPT) on CIFAR", allow_abbrev=False,
                            epilog=_recipes_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="Train a ViT on CIFAR-10/100, or pretrain an iGPT on its pixels (--task igpt). "
                                        "A recipe sets every field; flags override it.")  # fmt: skip
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="named settings: quick (~10 min on 2 CPU cores), cpu (within 2 hours on 2 cores), gpu (CuPy), "
                        "igpt-cpu, igpt-gpu, igpt-finetune-cpu; default: cpu (igpt-cpu with --task igpt, "
                        "igpt-finetune-cpu with --task finetune), or the gpu one with --backend cupy")  # fmt: skip
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<recipe>-<date>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    _add_data_flags(p)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP.get(f.name))
        else:
            p.add_argument(flag, type=_field_type(f), default=None, help=HELP.get(f.name, f"override the preset's {f.name}"))

    p = commands.add_parser("evaluate", allow_abbrev=False,
                            help="test accuracy (overall and per class) of a classifier's checkpoint (ViT or "
                                 "fine-tuned iGPT); a pretrained iGPT's test nats per token")  # fmt: skip
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    _add_data_flags(p)

    p = commands.add_parser("predict", help="top-5 classes for an image file", allow_abbrev=False)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("image", type=Path, help="a PNG or JPEG; resized to the model's input size")

    p = commands.add_parser("sample", allow_abbrev=False,
                            help="an iGPT checkpoint's unconditional samples and completions of test images, as a PNG")  # fmt: skip
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="the PNG to write (default: samples.png)")
    p.add_argument("--samples", type=int, default=8, help="unconditional samples (default 8)")
    p.add_argument("--images", type=int, default=4, help="test images to complete from their top half (default 4)")
    p.add_argument("--completions", type=int, default=8, help="completions of each (default 8)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, help="sample among the k most likely colours only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    _add_data_flags(p)

    p = commands.add_parser("probe", allow_abbrev=False,
                            help="linear probes on every layer of an iGPT checkpoint, against raw pixels and the "
                                 "same model at its random initialisation")  # fmt: skip
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, help="folder for probe.json and probe.png (default: the checkpoint's folder)")
    p.add_argument("--train-subset", type=int, default=0, help="probe on the first N training images (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="score on the first N test images (0: all)")
    p.add_argument("--holdout", type=int, default=5000,
                   help="the last N of those training images choose λ (default 5000)")  # fmt: skip
    p.add_argument("--l2", type=float, nargs="+", default=list(L2_GRID), help="the grid of λ to choose from")
    p.add_argument("--batch-size", type=int, default=100, help="images per forward of the feature extraction")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    _add_data_flags(p)

    p = commands.add_parser("experiment", allow_abbrev=False,
                            help="one of the ViT paper's design experiments as a table of runs over seeds; "
                                 "running it again skips finished runs and resumes a stopped one")  # fmt: skip
    p.add_argument("name", choices=sorted(experiments.EXPERIMENTS))
    p.add_argument("--size", choices=sorted(experiments.SIZES), default="full",
                   help="full (the README's table, 10-25 minutes on 2 CPU cores) or ci (a tiny model)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one run of every row per seed")
    p.add_argument("--out", type=Path, default=Path("runs/experiments"), help="where the runs and results go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_flags(p)
    return parser


def cmd_train(args):
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        if given or args.recipe or args.run_dir:
            flags = sorted("--" + n.replace("_", "-") for n in given) + ["--recipe"] * bool(args.recipe)
            flags += ["--run-dir"] * bool(args.run_dir)
            raise ValueError(f"--resume continues a run with its own settings; drop {', '.join(flags)}")
        print(f"resuming {args.resume}")
        history = resume(args.resume, data_dir=args.data_dir, source=args.archive, progress=not args.no_progress)
        task = TASKS[json.loads((run_folder(args.resume) / "config.json").read_text())["train"]["task"]]
    else:
        default = {"igpt": "igpt-cpu", "finetune": "igpt-finetune-cpu"}.get(given.get("task"), "cpu")
        recipe = args.recipe or (default.replace("cpu", "gpu") if given.get("backend") == "cupy" else default)
        config = replace(RECIPES[recipe], **given)
        run_dir = args.run_dir or Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"training recipe {recipe!r} in {run_dir}")
        history = train(config, run_dir, data_dir=args.data_dir, source=args.archive, progress=not args.no_progress)
        task = TASKS[config.task]
    last, best = history[-1], best_epoch(history)
    if "test_accuracy" in last:
        metric, fmt, name = "accuracy", ".2%", task.accuracy_name
        result = f"test {name} {last['test_accuracy']:.2%}"
    else:
        metric, fmt, name = "loss", ".4f", "loss"
        result = f"test {last['test_loss']:.4f} nats per token ({last['test_loss'] / np.log(2):.3f} bits)"
    if best is None:
        chosen = "no validation images to choose an epoch on (--val-size)"
    else:
        val, test = best[f"val_{metric}"], best[f"test_{metric}"]
        chosen = f"best validation {name} {val:{fmt}} at epoch {best['epoch']}: test {test:{fmt}}"
    print(f"done: {result} after {last['epoch']} epochs ({chosen}), {last['elapsed_s'] / 60:.1f} min")


def cmd_evaluate(args):
    """The checkpoint's test score, as its task scores a part after every epoch of training (on every
    test image), and per class where the task predicts the dataset's classes."""
    model, meta, arrays = load_checkpoint(args.checkpoint)
    task_class = of_checkpoint(meta, args.checkpoint, "evaluate")
    config = replace(run_config(meta, args.checkpoint), backend=args.backend, test_subset=0)
    model.to(args.backend, np.dtype(config.dtype))
    data = load_cifar(config.dataset, data_dir=args.data_dir, source=args.archive)
    task = task_class(config, split(data, config.train_subset, config.val_size), arrays)
    metrics = task.evaluate(model, "test")
    print(f"{args.checkpoint}: {task.report(metrics, len(data.test_labels))}")
    if "predictions" in metrics:
        width = max(len(c) for c in meta["classes"])
        for k, name in enumerate(meta["classes"]):
            mine = data.test_labels == k
            print(f"  {name:<{width}}  {(metrics['predictions'][mine] == k).mean():.2%}")


def cmd_predict(args):
    from PIL import Image, UnidentifiedImageError

    model, meta, arrays = load_checkpoint(args.checkpoint)
    task = of_checkpoint(meta, args.checkpoint, "predict")
    model.to(None, np.dtype(meta["train"]["dtype"])).eval()
    size = task.input_side(model)
    if not args.image.is_file():
        raise FileNotFoundError(f"{args.image} does not exist (expected a PNG or JPEG image)")
    try:
        with Image.open(args.image) as im:
            pixels = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{args.image} is not an image file that can be read ({e})") from e
    logits = task.image_logits(model, meta, arrays, pixels)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    print(f"{args.image}:")
    for k in np.argsort(-probs)[:5]:
        print(f"  {meta['classes'][k]:<12} {probs[k]:.2%}")


def cmd_sample(args):
    model, meta, arrays = load_checkpoint(args.checkpoint)
    task = of_checkpoint(meta, args.checkpoint, "sample")
    for name in ("samples", "images", "completions"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    model.to(args.backend, np.dtype(meta["train"]["dtype"])).eval()
    xp = backend.use_module(args.backend)
    palette = task.palette(arrays, args.backend)
    size, t = model.config.image_size, model.num_tokens
    rng = np.random.default_rng(args.seed)
    options = {"temperature": args.temperature, "top_k": args.top_k, "rng": rng}
    began = time.perf_counter()
    samples = model.generate(xp.zeros((args.samples, 0), dtype=np.int64), t, **options)
    data = load_cifar(meta["train"]["dataset"], data_dir=args.data_dir, source=args.archive)
    originals = tokenize(backend.to_device(data.test_images[: args.images], args.backend), size, palette)  # (M, T)
    top = xp.repeat(originals[:, : t // 2], args.completions, axis=0).astype(np.int64)
    completions = model.generate(top, t - t // 2, **options)
    seconds = time.perf_counter() - began

    def pixels(ids):
        return backend.to_numpy(palette.dequantize(ids.reshape(-1, size, size)))

    from .viz import plot_completions

    fig = plot_completions(pixels(originals), pixels(completions).reshape(args.images, args.completions, size, size, 3),
                           pixels(samples))  # fmt: skip
    with atomic_file(args.out, suffix=".png") as f:
        fig.savefig(f, dpi=100, format="png")
    print(f"wrote {args.out}: {args.samples} samples and {args.images}×{args.completions} completions of "
          f"{size}×{size} images in {seconds:.1f} s")  # fmt: skip


def cmd_probe(args):
    model, meta, arrays = load_checkpoint(args.checkpoint)
    task = of_checkpoint(meta, args.checkpoint, "probe")
    for name in ("train_subset", "test_subset", "batch_size"):
        if getattr(args, name) < (name == "batch_size"):
            raise ValueError(f"--{name.replace('_', '-')} must be >= {int(name == 'batch_size')}, got {getattr(args, name)}")
    if min(args.l2) < 0:
        raise ValueError(f"--l2 values must be >= 0, got {args.l2}")
    dtype = np.dtype(meta["train"]["dtype"])
    model.to(args.backend, dtype)
    data = load_cifar(meta["train"]["dataset"], data_dir=args.data_dir, source=args.archive)
    n_train, n_test = args.train_subset or len(data.train_images), args.test_subset or len(data.test_images)
    if n_train > len(data.train_images) or n_test > len(data.test_images):
        raise ValueError(f"--train-subset and --test-subset can be at most {len(data.train_images)} and "
                         f"{len(data.test_images)}, got {n_train} and {n_test}")  # fmt: skip
    size = model.config.image_size
    palette = task.palette(arrays, args.backend)
    images = {"train": backend.to_device(data.train_images[:n_train], args.backend),
              "test": backend.to_device(data.test_images[:n_test], args.backend)}  # fmt: skip
    labels = {"train": data.train_labels[:n_train], "test": data.test_labels[:n_test]}
    tokens = {split: tokenize(x, size, palette) for split, x in images.items()}
    report = compare(model, tokens, images, labels, args.holdout, args.l2, args.batch_size, meta["train"]["seed"])
    rows = report["layers"]

    print(f"linear probes of {args.checkpoint}: {n_train} training images (the last {args.holdout} choose λ), "
          f"{n_test} test images")  # fmt: skip
    print(f"{'layer':<16}{'pretrained: held-out':>22}{'test':>8}{'λ':>8}{'random init: held-out':>23}{'test':>8}"
          f"{'λ':>8}")  # fmt: skip
    for mine, rand in zip(rows["pretrained"], rows["random init"], strict=True):
        layer = f"{mine['layer']}" + (" (final LN)" if mine["layer"] == len(rows["pretrained"]) - 1 else "")
        print(f"{layer:<16}{mine['holdout_accuracy']:>22.2%}{mine['test_accuracy']:>8.2%}{mine['l2']:>8.0e}"
              f"{rand['holdout_accuracy']:>23.2%}{rand['test_accuracy']:>8.2%}{rand['l2']:>8.0e}")  # fmt: skip
    pixel = rows["raw pixels"][0]
    best = best_layer(rows["pretrained"])
    print(f"raw pixels ({size}×{size}×3): held-out {pixel['holdout_accuracy']:.2%}, test {pixel['test_accuracy']:.2%} "
          f"(λ {pixel['l2']:.0e})")  # fmt: skip
    print(f"best pretrained layer, chosen on the held-out images: {best['layer']} of 0-{len(rows['pretrained']) - 1} "
          f"(held-out {best['holdout_accuracy']:.2%}), test {best['test_accuracy']:.2%}")  # fmt: skip
    print("time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report["timings_s"].items()))
    if report["peak_memory_mib"]["data"] is not None:
        print("peak resident memory after " + ", ".join(f"{name} {mib:.0f} MiB"
                                                         for name, mib in report["peak_memory_mib"].items()))

    out = args.out or args.checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(args.checkpoint), "train_images": n_train, "test_images": n_test,
              "holdout": args.holdout, "l2_grid": args.l2, **report}  # fmt: skip
    with atomic_file(out / "probe.json") as f:
        f.write(json.dumps(report, indent=2).encode())
    from .viz import plot_probe

    fig = plot_probe({name: [r["test_accuracy"] for r in rows[name]] for name in ("pretrained", "random init")},
                     {f"raw pixels ({size}×{size}×3)": pixel["test_accuracy"]})  # fmt: skip
    with atomic_file(out / "probe.png", suffix=".png") as f:
        fig.savefig(f, dpi=100, format="png")
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")


def cmd_experiment(args):
    results = experiments.run(args.name, args.out, args.size, tuple(args.seeds), data_dir=args.data_dir,
                              source=args.archive, progress=not args.no_progress)  # fmt: skip
    print(experiments.table(results))
    print(f"wrote {args.out / args.name}/results.md, results.json and results.png")


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "sample": cmd_sample,
                "probe": cmd_probe, "experiment": cmd_experiment}  # fmt: skip
    command = commands[args.command]
    world = distributed.world()  # under mpiexec: this process's place among those training one model
    if world.rank:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (its lines would repeat rank 0's)
    try:
        command(args)
    except Interrupted as e:  # every process stops at the same step (train.py); one says so
        if world.rank == 0:
            print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started (or a second Ctrl-C): nothing to save
        print("\ninterrupted", file=sys.stderr)
        return _end(world, 130)
    except (DataError, ValueError, FileNotFoundError, TrainingDiverged, RuntimeError) as e:
        if os.environ.get("MINIVIT_TRACEBACK", "0") != "0":  # for a bug report: the whole traceback, not one line
            raise
        where = f" (process {world.rank} of {world.size})" if world.size > 1 else ""
        print(f"error{where}: {e}", file=sys.stderr)
        return _end(world, 1)
    return 0


def _end(world, status):
    """An error's exit status; with other processes, which may be waiting for this one in a collective
    call, it ends them all (MPI_Abort) instead of leaving them to hang."""
    if world.size > 1:
        world.abort(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
