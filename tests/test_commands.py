"""Every command of `python -m minivit` on a checkpoint of every task: the command runs where it applies
(the task lists it in Task.commands), and is one clear line naming the tasks it takes where it does not."""

import subprocess
import sys
from dataclasses import replace

import pytest
from PIL import Image

from minivit.config import TrainConfig
from minivit.tasks import TASKS
from minivit.train import train

COMMON = dict(epochs=1, batch_size=64, warmup_epochs=0.5, train_subset=512, test_subset=100, eval_batch_size=100,
              label_smoothing=0.0, dim=16, depth=1, heads=2, mlp_dim=32)  # fmt: skip
IGPT = TrainConfig(task="igpt", model="cpu", image_size=8, vocab_size=16, palette_sample=5000, crop_padding=0, **COMMON)
RUNS = {
    "classify": TrainConfig(model="mini", patch_size=8, **COMMON),
    "igpt": IGPT,
    "finetune": replace(IGPT, task="finetune"),  # from scratch: the commands read its own palette
    "mpp": TrainConfig(task="mpp", model="mini", patch_size=8, **COMMON),
}
# What each command prints when it runs, and the arguments it takes besides the checkpoint.
RUNS_WITH = {
    "evaluate": {"classify": "test accuracy", "igpt": "nats per token", "finetune": "test accuracy",
                 "mpp": "test colour accuracy"},  # fmt: skip
    "predict": "%",
    "sample": "wrote",
    "probe": "best pretrained layer",
}


def minivit(*args):
    return subprocess.run([sys.executable, "-m", "minivit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(cifar_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("commands")
    for task, config in RUNS.items():
        train(config, folder / task, data_dir=cifar_dir, progress=False)
    return {task: folder / task / "checkpoint.npz" for task in RUNS}


def arguments(command, cifar_dir, tmp_path):
    if command == "predict":
        from minivit.data import load_cifar

        image = tmp_path / "test0.png"
        Image.fromarray(load_cifar(data_dir=cifar_dir).test_images[0]).save(image)
        return [image]
    data = ["--data-dir", cifar_dir]
    if command == "sample":
        return ["--out", tmp_path / "samples.png", "--samples", 1, "--images", 1, "--completions", 1, *data]
    if command == "probe":
        return ["--out", tmp_path, "--train-subset", 300, "--test-subset", 100, "--holdout", 100, *data]
    return data


@pytest.mark.parametrize("command", sorted(RUNS_WITH))
@pytest.mark.parametrize("task", sorted(RUNS))
def test_every_command_on_every_tasks_checkpoint(checkpoints, cifar_dir, tmp_path, task, command):
    result = minivit(command, checkpoints[task], *arguments(command, cifar_dir, tmp_path))
    if command in TASKS[task].commands:
        assert result.returncode == 0, result.stderr
        expected = RUNS_WITH[command]
        assert (expected[task] if isinstance(expected, dict) else expected) in result.stdout, result.stdout
    else:
        takers = " or ".join(name for name, t in TASKS.items() if command in t.commands)
        assert result.returncode == 1 and result.stdout == "", result.stdout
        assert result.stderr == (f"error: {checkpoints[task]} is a checkpoint of task {task!r} "
                                 f"({TASKS[task].description}); {command} takes one of task {takers}\n")  # fmt: skip


def test_every_task_says_which_commands_take_its_checkpoints():
    """Each command applies to some task; evaluate to all of them; mpp's checkpoints are for evaluate and --init."""
    assert all(any(command in t.commands for t in TASKS.values()) for command in RUNS_WITH)
    assert all("evaluate" in t.commands for t in TASKS.values()) and set(TASKS) == set(RUNS)
    assert TASKS["mpp"].commands == ("evaluate",)


def test_masked_patch_training_names_its_colour_accuracy(cifar_dir, tmp_path):
    result = minivit("train", "--task", "mpp", "--recipe", "plain-quick", "--label-smoothing", "0", "--dim", 16, "--depth", 1,
                     "--heads", 2, "--mlp-dim", 32, "--patch-size", 8, "--epochs", 1, "--train-subset", 256,
                     "--val-size", 64, "--test-subset", 100, "--no-progress", "--run-dir", tmp_path / "mpp",
                     "--data-dir", cifar_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    done = result.stdout.splitlines()[-1]
    assert done.startswith("done: test colour accuracy ") and "best validation colour accuracy" in done, done
