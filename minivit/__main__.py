"""The command line: `python -m minivit train | evaluate | predict`.

    python -m minivit train                            # the default recipe on CIFAR-10
    python -m minivit train --recipe quick             # a first look, ~10 minutes on 2 CPU cores
    python -m minivit train --resume runs/cpu-...      # continue a stopped run
    python -m minivit evaluate runs/cpu-.../checkpoint.npz
    python -m minivit predict runs/cpu-.../checkpoint.npz cat.png
"""

import argparse
import os
import sys
import time
import types
import typing
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from . import backend
from .data import DataError, load_cifar, normalize
from .train import RECIPES, Interrupted, TrainConfig, TrainingDiverged, evaluate, load_checkpoint, resume, train

HELP = {
    "dataset": "cifar10 or cifar100",
    "model": "ViT preset (tiny, mini); --patch-size ... --dropout override its fields",
    "patch_dropout": "share of patch tokens each image drops while training (PatchDropout; 0: off)",
    "stem": "3×3 stride-2 convolutions before the patches (the paper's hybrid; 0: off)",
    "stem_width": "channels of the stem's last convolution, each earlier one half as many (0: dim/2)",
    "epochs": "number of epochs",
    "batch_size": "images per step",
    "lr": "peak learning rate (AdamW), reached after warmup",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_epochs": "linear warmup length, in epochs (may be fractional)",
    "weight_decay": "AdamW's decoupled weight decay (not on biases, norms, cls, pos)",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "label_smoothing": "ε of label smoothing",
    "crop_padding": "random crop after this much zero padding (0: off)",
    "flip": "random horizontal flips",
    "mixup": "mixup's Beta(α, α) (0: off)",
    "cutmix": "CutMix's Beta(α, α) (0: off)",
    "mix_prob": "share of batches that mixup/CutMix apply to",
    "train_subset": "train on the first N images only (0: all)",
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
        lines.append(f"  {name:<6} {' '.join(changed)}")
    shown = [f"{f.name}={getattr(default, f.name)}" for f in fields(TrainConfig) if getattr(default, f.name) is not None]
    lines.append("defaults: " + " ".join(shown))
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minivit", description="Train and use ViTs written in NumPy/CuPy.",
                                     epilog="Errors print one line; set MINIVIT_TRACEBACK=1 for the full traceback.",
                                     allow_abbrev=False)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a ViT on CIFAR", allow_abbrev=False, epilog=_recipes_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="Train a ViT on CIFAR-10/100. A recipe sets every field; flags override it.")  # fmt: skip
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="named settings: quick (~10 min on 2 CPU cores), cpu (within 2 hours on 2 cores), gpu (CuPy); "
                        "default: gpu with --backend cupy, else cpu")  # fmt: skip
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

    p = commands.add_parser("evaluate", help="test accuracy (overall and per class) of a checkpoint", allow_abbrev=False)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    _add_data_flags(p)

    p = commands.add_parser("predict", help="top-5 classes for an image file", allow_abbrev=False)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("image", type=Path, help="a PNG or JPEG; resized to the model's input size")
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
    else:
        recipe = args.recipe or ("gpu" if given.get("backend") == "cupy" else "cpu")
        config = replace(RECIPES[recipe], **given)
        run_dir = args.run_dir or Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"training recipe {recipe!r} in {run_dir}")
        history = train(config, run_dir, data_dir=args.data_dir, source=args.archive, progress=not args.no_progress)
    best = max(history, key=lambda m: m["test_accuracy"])
    last = history[-1]
    print(f"done: test accuracy {last['test_accuracy']:.2%} after {last['epoch']} epochs "
          f"(best {best['test_accuracy']:.2%} at epoch {best['epoch']}), {last['elapsed_s'] / 60:.1f} min")  # fmt: skip


def cmd_evaluate(args):
    model, meta, _ = load_checkpoint(args.checkpoint)
    model.to(args.backend, np.dtype(meta["train"]["dtype"]))
    data = load_cifar(meta["train"]["dataset"], data_dir=args.data_dir, source=args.archive)
    result = evaluate(model, data.test_images, data.test_labels, meta["mean"], meta["std"])
    print(f"{args.checkpoint}: test accuracy {result['accuracy']:.2%} on {len(data.test_labels)} images, "
          f"loss {result['loss']:.4f}")  # fmt: skip
    width = max(len(c) for c in meta["classes"])
    for k, name in enumerate(meta["classes"]):
        mine = data.test_labels == k
        print(f"  {name:<{width}}  {(result['predictions'][mine] == k).mean():.2%}")


def cmd_predict(args):
    from PIL import Image, UnidentifiedImageError

    model, meta, _ = load_checkpoint(args.checkpoint)
    model.to(None, np.dtype(meta["train"]["dtype"])).eval()
    size = model.config.image_size
    if not args.image.is_file():
        raise FileNotFoundError(f"{args.image} does not exist (expected a PNG or JPEG image)")
    try:
        with Image.open(args.image) as im:
            pixels = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{args.image} is not an image file that can be read ({e})") from e
    x = normalize(pixels[None], meta["mean"], meta["std"], model.dtype)
    logits = backend.to_numpy(model(x))[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    print(f"{args.image}:")
    for k in np.argsort(-probs)[:5]:
        print(f"  {meta['classes'][k]:<12} {probs[k]:.2%}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict}[args.command]
    try:
        command(args)
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started (or a second Ctrl-C): nothing to save
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (DataError, ValueError, FileNotFoundError, TrainingDiverged, RuntimeError) as e:
        if os.environ.get("MINIVIT_TRACEBACK", "0") != "0":  # for a bug report: the whole traceback, not one line
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
