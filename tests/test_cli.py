"""`python -m minivit train | evaluate | predict`: a short run end to end, and clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TINY = ["--dim", "32", "--depth", "1", "--heads", "2", "--mlp-dim", "64", "--epochs", "1", "--batch-size", "64",
        "--train-subset", "1024", "--test-subset", "200", "--no-progress"]  # fmt: skip


def minivit(*args):
    return subprocess.run([sys.executable, "-m", "minivit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = minivit("train", "--recipe", "plain-quick", *TINY, "--val-size", "500", "--run-dir", run_dir, "--data-dir",
                     cifar_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "training recipe 'plain-quick'" in result.stdout and "epoch 1/1" in result.stdout
    assert "loss: val " in result.stdout and "acc: val " in result.stdout  # the epoch's line: both parts
    assert "done: test accuracy" in result.stdout and "best validation accuracy" in result.stdout
    return run_dir


def test_train_help_lists_the_flags():
    result = minivit("train", "--help")
    assert result.returncode == 0
    for flag in ("--recipe", "--resume", "--epochs", "--lr", "--mixup", "--label-smoothing", "--backend", "--seed",
                 "--data-dir", "--archive", "--run-dir", "--no-flip"):  # fmt: skip
        assert flag in result.stdout


def test_short_train_writes_a_run_folder(run_dir):
    for name in ("config.json", "checkpoint.npz", "metrics.jsonl", "curves.png"):
        assert (run_dir / name).is_file(), name


def test_evaluate_prints_overall_and_per_class_accuracy(run_dir, cifar_dir):
    result = minivit("evaluate", run_dir / "checkpoint.npz", "--data-dir", cifar_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "test accuracy" in lines[0] and "10000 images" in lines[0]
    per_class = lines[1:]
    assert [line.split()[0] for line in per_class][:2] == ["airplane", "automobile"] and len(per_class) == 10
    accuracies = [float(line.split()[1].rstrip("%")) for line in per_class]
    overall = float(lines[0].split("test accuracy ")[1].split("%")[0])
    assert np.mean(accuracies) == pytest.approx(overall, abs=0.01)  # 1,000 test images per class


def test_predict_prints_the_top_5(run_dir, cifar_dir, tmp_path):
    from minivit.data import load_cifar

    image = tmp_path / "test0.png"
    Image.fromarray(load_cifar(data_dir=cifar_dir).test_images[0]).resize((64, 48)).save(image)  # any size works
    result = minivit("predict", run_dir / "checkpoint.npz", image)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 5
    probabilities = [float(r.split()[1].rstrip("%")) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    names = {r.split()[0] for r in rows}
    assert len(names) == 5 and names <= {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                         "ship", "truck"}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--archive", "/no/such/cifar.tar.gz", "--data-dir", "/no/such/dir"], "does not exist"),
        (["train", "--model", "huge"], "unknown model 'huge' for task 'classify'"),
        (["train", "--resume", "/no/such/run"], "has no checkpoint.npz"),
        (["evaluate", "/no/such/checkpoint.npz"], "does not exist"),
        (["predict", "/no/such/checkpoint.npz", "x.png"], "does not exist"),
    ],
)
def test_bad_paths_and_values_are_clear_errors(args, message):
    result = minivit(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_traceback_on_request():
    args = [sys.executable, "-m", "minivit", "evaluate", "/no/such/checkpoint.npz"]
    env = {**os.environ, "MINIVIT_TRACEBACK": "1"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "FileNotFoundError" in result.stderr and "does not exist" in result.stderr


def test_train_can_start_from_another_runs_weights(run_dir, cifar_dir, tmp_path):
    """--init: a ViT run starts from a checkpoint's weights; at learning rate 0 it ends with them, bit for bit."""
    from helpers import assert_bit_identical

    from minivit.checkpoint import load_checkpoint

    result = minivit("train", "--recipe", "plain-quick", *TINY, "--lr", "0", "--min-lr", "0", "--init",
                     run_dir / "checkpoint.npz", "--run-dir", tmp_path / "again", "--data-dir", cifar_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    start = load_checkpoint(run_dir / "checkpoint.npz")[0].state_dict()
    assert_bit_identical(load_checkpoint(tmp_path / "again" / "checkpoint.npz")[0].state_dict(), start)
    other = minivit("train", "--recipe", "plain-quick", *TINY, "--dim", "64", "--init", run_dir / "checkpoint.npz",
                    "--run-dir", tmp_path / "wider", "--data-dir", cifar_dir)  # fmt: skip
    assert other.returncode == 1 and "another architecture than this run's: dim 32 there, 64 here" in other.stderr


def test_resume_refuses_new_settings(run_dir):
    result = minivit("train", "--resume", run_dir, "--epochs", "5")
    assert result.returncode == 1 and "drop --epochs" in result.stderr


def test_predict_on_a_file_that_is_not_an_image(run_dir, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = minivit("predict", run_dir / "checkpoint.npz", bad)
    assert result.returncode == 1 and "is not an image file" in result.stderr


def test_a_checkpoint_that_is_not_one(tmp_path):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"garbage")
    result = minivit("evaluate", bad)
    assert result.returncode == 1 and "is not a minivit checkpoint" in result.stderr


def test_unknown_flag_is_a_usage_error():
    result = minivit("train", "--epoch", "3")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
