"""The ViT paper's design experiments at CIFAR scale, as code: one runner, one results format.

    python -m minivit experiment pos-embed             # every row of the table, every seed; resumable
    python -m minivit experiment pos-embed --size ci   # the same table with a tiny model (the tests)

An experiment is a table: rows of TrainConfig changes on one base recipe, each trained once per seed
through minivit.train (run folders, exact resume). A row may start from another row's checkpoint of
the same seed (`init_row`: fine-tuning after masked patch prediction). Running an experiment again
skips the finished runs and resumes a stopped one, so a table can be built over several sessions.
It writes <out>/<name>/results.md (the table: mean and range over seeds), results.json and
results.png.

Every run holds out the last 5,000 CIFAR-10 training images (beyond the 10,000 it trains on, so its
training set is what it was before) and reports their accuracy beside the test accuracy: a table's
"best" row is the one with the best validation accuracy, and the test column only reports it.
"""

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import distributed
from .atomic import atomic_file
from .checkpoint import load_checkpoint
from .config import RECIPES
from .train import resume, train
from .viz import plot_experiment

# A 3-epoch mini ViT on 10,000 CIFAR-10 images: about 2 minutes a run on 2 AMD EPYC cores (NumPy; relative
# attention 3.3), 10-25 minutes a table (the README has each table's measured time).
BASE = replace(RECIPES["plain-quick"], epochs=3, train_subset=10_000, val_size=5_000)
# ci: two blocks, so the rows that differ by layer ("every layer", "every layer, shared") compute differently.
SIZES = {
    "full": {},
    "ci": {"dim": 16, "depth": 2, "heads": 2, "mlp_dim": 32, "epochs": 1, "batch_size": 64, "train_subset": 256,
           "val_size": 100, "test_subset": 100},
}  # fmt: skip


# One more epoch from a trained model, at a tenth of the base's learning rate, and at the base's own (2e-3,
# no warmup: the table's first version, which undid some of the training); the rate is chosen on validation.
FINE_TUNE = {"epochs": 1, "warmup_epochs": 0.0, "lr": 2e-4}
BASE_LR = {**FINE_TUNE, "lr": BASE.lr}


@dataclass(frozen=True)
class Row:
    label: str
    changes: dict = field(default_factory=dict)  # TrainConfig fields that differ from the experiment's base
    init_row: str | None = None  # start from this row's checkpoint (same seed)
    reported: bool = True  # False: a pretraining step, not a row of the table


@dataclass(frozen=True)
class Experiment:
    title: str
    paper: str  # what the paper found, to compare with
    rows: tuple
    base: object = BASE


EXPERIMENTS = {
    "pos-embed": Experiment(
        "Position embeddings (Appendix D.4, Table 8)",
        "ViT-B/16, 5-shot linear ImageNet (Table 8): no position embedding is clearly worst; 1-D, 2-D and "
        "relative, at the input or at every layer, differ little from each other.",
        (Row("none", {"pos_embed": "none"}), Row("1-D", {}), Row("2-D", {"pos_embed": "2d"}),
         Row("relative", {"pos_embed": "relative"}), Row("1-D, every layer", {"pos_place": "every-layer"}),
         Row("1-D, every layer, shared", {"pos_place": "every-layer-shared"})),
    ),  # fmt: skip
    "pool": Experiment(
        "Class token against global average pooling (Figure 9)",
        "ViT-S/16 on ImageNet: both reach the same accuracy, each at its own learning rate; GAP at the class "
        "token's learning rate does much worse.",
        tuple(Row(f"{name}, lr {lr:.0e}".replace("e-0", "e-"), {"pool": pool, "lr": lr})
              for name, pool in (("class token", "cls"), ("GAP", "mean")) for lr in (3e-4, 1e-3, 3e-3)),
    ),  # fmt: skip
    "mpp": Experiment(
        "Masked patch prediction, then fine-tuning (Sec. 4.6)",
        "ViT-B/16 on ImageNet: 79.9 % after masked patch prediction, 2 % above training from scratch, 4 % "
        "below supervised pretraining.",
        (Row("masked patch prediction", {"task": "mpp", "label_smoothing": 0.0}, reported=False),
         Row("fine-tuned after masked patch prediction", init_row="masked patch prediction"),
         Row("from scratch, twice the epochs (same compute)", {"epochs": "2x"})),
    ),  # fmt: skip
    "resolution": Experiment(
        "Fine-tuning at a higher resolution (Sec. 3.2)",
        "Fine-tuning at a higher resolution than pre-training is often beneficial: the same patch size gives a "
        "longer sequence, and the pre-trained position embeddings are 2-D interpolated.",
        (Row("trained at 32 px", reported=False),
         Row("then 1 epoch more at 32 px", FINE_TUNE, init_row="trained at 32 px"),
         Row("then 1 epoch at 48 px (CIFAR upsampled)", {**FINE_TUNE, "image_size": 48}, init_row="trained at 32 px"),
         Row("then 1 epoch more at 32 px, lr 2e-3", BASE_LR, init_row="trained at 32 px"),
         Row("then 1 epoch at 48 px, lr 2e-3", {**BASE_LR, "image_size": 48}, init_row="trained at 32 px")),
    ),  # fmt: skip
}


def slug(label):
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def row_config(experiment, row, size, seed, folder):
    """The TrainConfig of one row and seed ("2x" epochs: twice the base's, the same compute as two stages)."""
    config = replace(experiment.base, **SIZES[size], seed=seed)
    changes = {k: (2 * config.epochs if v == "2x" else v) for k, v in row.changes.items()}
    config = replace(config, **changes)
    if row.init_row is not None:
        config = replace(config, init=str(folder / slug(row.init_row) / f"seed{seed}" / "checkpoint.npz"))
    return config


def run(name, out="runs/experiments", size="full", seeds=(0, 1), data_dir=None, source=None, progress=True,
        log=print):  # fmt: skip
    """Train every row of experiment `name` with every seed (skipping finished runs, resuming stopped
    ones), then write the results. returns the results dict (also in results.json)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if len(seeds) < 1:
        raise ValueError("give at least one seed")
    experiment, folder = EXPERIMENTS[name], Path(out) / name
    finals, code = {}, set()
    for row in experiment.rows:
        for seed in seeds:
            config = row_config(experiment, row, size, seed, folder)
            run_dir = folder / slug(row.label) / f"seed{seed}"
            state = _finished(run_dir, config)
            if state is None:
                log(f"{name}: {row.label}, seed {seed} -> {run_dir}")
                kwargs = {"data_dir": data_dir, "source": source, "progress": progress}
                exists = (run_dir / "checkpoint.npz").is_file()
                if exists:
                    resume(run_dir, **kwargs)
                else:
                    train(config, run_dir, **kwargs)
                state = _finished(run_dir, config)  # what the run recorded, read back
            code.update(state.get("code", []))  # the versions and CPUs that trained it (none before they were kept)
            if row.reported:
                final = finals.setdefault(row.label, {"val": [], "test": []})
                final["val"].append(state["history"][-1]["val_accuracy"])
                final["test"].append(state["history"][-1]["test_accuracy"])
    results = {"experiment": name, "title": experiment.title, "paper": experiment.paper, "size": size,
               "seeds": list(seeds), "code": sorted(code), "rows": finals}  # fmt: skip
    if distributed.world().rank == 0:  # under mpiexec every process trains each run; one writes the table
        _write(folder, results)
    return results


def _finished(run_dir, config):
    """The training state (history, code) of a finished run in run_dir, or None; a ValueError when the run
    there was trained with other settings than the row's (the table was changed since: it must not mix the two)."""
    path = run_dir / "checkpoint.npz"
    if not path.is_file():
        return None
    _, meta, _ = load_checkpoint(path)
    wanted = json.loads(json.dumps(asdict(config)))  # as the checkpoint stores it
    changed = sorted(k for k in wanted.keys() | meta["train"].keys() if wanted.get(k) != meta["train"].get(k))
    if changed:
        settings = ", ".join(f"{k} {meta['train'].get(k)!r} (now {wanted.get(k)!r})" for k in changed)
        raise ValueError(f"{run_dir} was trained with other settings than this row has: {settings}; delete that "
                         f"folder to train the row again, or give another --out")  # fmt: skip
    return meta["state"] if meta["state"]["epoch"] >= config.epochs else None


def best_row(results):
    """The label of the row with the best mean validation accuracy: the row a table may call best."""
    return max(results["rows"], key=lambda label: np.mean(results["rows"][label]["val"]))


def table(results):
    """The results as a markdown table: each row's validation and test accuracy, mean and range over the seeds;
    the row chosen on validation marked."""
    seeds = ", ".join(map(str, results["seeds"]))
    trained_by = "; ".join(results["code"])
    lines = [f"{results['title']}: accuracy over seeds {seeds} (size {results['size']}; trained by {trained_by})", "",
             "| | validation: mean | range | test: mean | range | test per seed |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    chosen = best_row(results)
    for label, scores in results["rows"].items():
        val, test = np.asarray(scores["val"]), np.asarray(scores["test"])
        per_seed = ", ".join(f"{x:.1%}" for x in test)
        name = f"{label} (best on validation)" if label == chosen else label
        lines.append(f"| {name} | {val.mean():.1%} | {val.min():.1%}–{val.max():.1%} | **{test.mean():.1%}** | "
                     f"{test.min():.1%}–{test.max():.1%} | {per_seed} |")  # fmt: skip
    lines += ["", f"The paper: {results['paper']}"]
    return "\n".join(lines) + "\n"


def _write(folder, results):
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "results.json") as f:
        f.write(json.dumps(results, indent=2).encode())
    with atomic_file(folder / "results.md") as f:
        f.write(table(results).encode())
    with atomic_file(folder / "results.png", suffix=".png") as f:
        plot_experiment(results).savefig(f, dpi=100, format="png")
