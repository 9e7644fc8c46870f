"""The measured results of the README's full-size runs, as small JSON files the notebooks show beside what
they compute at their own (often tiny) size.

Each file names the command, the commit and the CPU that measured it; the README has the same figures.
    results.load("igpt-cpu")       # iGPT pretraining: per-epoch losses, the baselines, the cache's speed-up
    results.load("igpt-probe")     # linear probes of every layer, pretrained and at random initialisation
    results.load("igpt-finetune")  # fine-tuning from the checkpoint against from scratch
    results.load("pos-embed")      # a table of minivit.experiments (also pool, mpp, resolution)
"""

import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def names():
    """The results there are."""
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def load(name):
    """The full-size result `name` (one of names()) as a dict."""
    if name not in names():  # a name, never a path
        raise ValueError(f"no full-size result {name!r}; expected one of {names()}")
    return json.loads((FOLDER / f"{name}.json").read_text())
