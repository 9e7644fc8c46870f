"""Checkpoints: what a run folder's checkpoint.npz holds, reading it back, and starting a new run from
another run's weights (TrainConfig.init).

checkpoint.npz: "model.<name>" (the model's state_dict), "optim.<name>" (the optimiser's, with the
schedule's step), what the task adds (iGPT: "palette.centers"), and "meta": JSON of the TrainConfig
("train"), the model's class and config ("model_class", "model"), the task's meta (classes, ...) and
"state", the position in training (epoch, step, running sums, elapsed time, metrics history, and the
code and CPU that trained it).
"""

import json
import platform
import subprocess
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .atomic import save_npz
from .config import TrainConfig
from .tasks import TASKS

# The training state a checkpoint holds; 2: named running sums, and seeds keyed by stream.
CHECKPOINT_FORMAT = 2
# Fields of a model config that may differ between a checkpoint and a run that starts from it: the
# regularisers, and the classes (which shape only the head).
MAY_DIFFER = ("dropout", "patch_dropout", "num_classes")


def save_checkpoint(path, model, optimizer, task, meta):
    """Write a checkpoint (see the module docstring) atomically: model, optimiser, the task's arrays, meta."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim.{k}": v for k, v in optimizer.state_dict().items()}
    arrays |= task.arrays
    arrays["meta"] = np.array(json.dumps(meta))
    save_npz(path, arrays)


def load_checkpoint(path):
    """(model on NumPy in the run's dtype, meta dict, all arrays) from a checkpoint.npz written by training."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the checkpoint.npz of a training run)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        task = TASKS[meta["train"].get("task", "classify")]
        # the model it names (the task's first for checkpoints written before they named one)
        model_class = next(m for m in task.models if m.__name__ == meta.get("model_class", task.models[0].__name__))
        dtype = meta["train"].get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"its dtype must be 'float32' or 'float64', got {dtype!r}")
        model = model_class.from_config(model_class.config_class(**meta["model"]))
    except (OSError, ValueError, KeyError, EOFError, TypeError, StopIteration, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a minivit checkpoint of this version ({e})") from e
    model.to("numpy", dtype)  # a float64 run's weights stay float64
    model.load_state_dict({k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")})
    return model, meta, arrays


def run_config(meta, path):
    """The TrainConfig a checkpoint was trained with (its meta, as load_checkpoint returns it)."""
    try:
        return TrainConfig(**meta["train"])
    except TypeError as e:
        raise ValueError(f"{path} was written with other training settings than this version knows ({e})") from e


def start_from(model, init, path):
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
