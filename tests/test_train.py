"""Training on a subset of the real CIFAR-10: learning, the run folder, exact resume, the NaN guard, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from helpers import assert_bit_identical, ctrl_c_at

import minivit
from minivit.checkpoint import cpu_name, load_checkpoint
from minivit.config import RECIPES, TrainConfig
from minivit.tasks import Classify
from minivit.tasks.classify import evaluate
from minivit.train import STREAMS, TrainingDiverged, resume, step_seed, train

# A one-block ViT on 2,048 images: a few seconds per run.
SMALL = TrainConfig(model="mini", dim=32, depth=1, heads=2, mlp_dim=64, epochs=3, batch_size=64, lr=2e-3,
                    warmup_epochs=0.5, train_subset=2048, test_subset=500)  # fmt: skip


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "minivit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def small_flags(config=SMALL):
    """Command-line flags that train `config`: the quick recipe, a plain ViT, with every field it sets overridden."""
    return ["--dim", config.dim, "--depth", config.depth, "--heads", config.heads, "--mlp-dim", config.mlp_dim,
            "--epochs", config.epochs, "--batch-size", config.batch_size, "--lr", config.lr,
            "--warmup-epochs", config.warmup_epochs, "--train-subset", config.train_subset,
            "--test-subset", config.test_subset, "--recipe", "plain-quick", "--no-progress"]  # fmt: skip


def checkpoint_params(run_dir):
    model, meta, _ = load_checkpoint(run_dir / "checkpoint.npz")
    return model.state_dict(), meta


@pytest.fixture(scope="module")
def reference(cifar_dir, tmp_path_factory):
    """An uninterrupted run of SMALL: (run folder, its history)."""
    run_dir = tmp_path_factory.mktemp("reference")
    return run_dir, train(SMALL, run_dir, data_dir=cifar_dir, progress=False)


def test_short_run_learns(reference):
    _, history = reference
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.2, f"test accuracy {history[-1]['test_accuracy']:.3f} (chance is 0.1)"


def test_run_folder(reference, cifar_dir):
    run_dir, history = reference
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["dim"] == SMALL.dim and config["model"]["dim"] == SMALL.dim
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "images_per_s"} <= lines[0].keys()
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(run_dir) if p.startswith(".tmp")], "temporary files left behind"

    model, meta, _ = load_checkpoint(run_dir / "checkpoint.npz")
    assert meta["state"]["epoch"] == SMALL.epochs and meta["classes"][0] == "airplane"
    data = minivit.data.load_cifar(data_dir=cifar_dir)
    result = evaluate(model, data.test_images[:500], data.test_labels[:500], meta["mean"], meta["std"])
    assert result["accuracy"] == history[-1]["test_accuracy"]


def test_a_validation_split_is_scored_every_epoch_and_changes_nothing_of_the_training(reference, cifar_dir, tmp_path):
    """val_size holds out the last training images: a run of the first 2,048 trains exactly as before (the
    same bits), and scores the held-out images after every epoch."""
    _, history = reference
    config = replace(SMALL, val_size=1000)
    held = train(config, tmp_path / "run", data_dir=cifar_dir, progress=False)
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert [m[key] for m in held] == [m[key] for m in history], key
    model, meta, _ = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    data = minivit.data.load_cifar(data_dir=cifar_dir)
    val = evaluate(model, data.train_images[-1000:], data.train_labels[-1000:], meta["mean"], meta["std"])
    assert val["accuracy"] == held[-1]["val_accuracy"] and val["loss"] == held[-1]["val_loss"]
    assert meta["state"]["code"][0].endswith(f"on {cpu_name()}")  # what trained it, for its figures


def test_without_a_train_subset_the_validation_images_are_left_out_of_training(cifar_dir):
    data = minivit.data.load_cifar(data_dir=cifar_dir)
    config = replace(SMALL, train_subset=0, val_size=5000).check()
    task = Classify(config, minivit.data.split(data, 0, 5000, 500))
    assert task.num_train == 45_000 and task.eval_parts == ("val", "test")
    np.testing.assert_array_equal(task.train_images, data.train_images[:45_000])
    np.testing.assert_array_equal(task.eval_sets["val"][0], data.train_images[45_000:])


def test_plain_ops_train_like_the_kernels(reference, cifar_dir, tmp_path):
    """With the CPU kernels off, the run computes with exactly the ops a student reads; its curve
    must match the kernels' run within float32 noise (they differ in rounding only)."""
    _, with_kernels = reference
    minivit.kernels.set_enabled(False)
    try:
        plain = train(SMALL, tmp_path / "plain", data_dir=cifar_dir, progress=False)
    finally:
        minivit.kernels.set_enabled(True)
    for a, b in zip(plain, with_kernels, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4, f"epoch {a['epoch']}: {a} vs {b}"
        assert abs(a["test_loss"] - b["test_loss"]) < 1e-4, f"epoch {a['epoch']}: {a} vs {b}"
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.004, f"epoch {a['epoch']}: {a} vs {b}"  # 2 images


def test_random_streams_never_share_a_seed():
    """Every (stream, epoch, step) of a run gets its own seed: the shuffle of an epoch and the
    augmentation of its first step once drew the same numbers."""
    positions = [(stream, epoch, step) for stream in STREAMS for epoch in range(4) for step in range(4)]
    seeds = {step_seed(0, *position) for position in positions}
    assert len(seeds) == len(positions)
    with pytest.raises(ValueError, match="stream must be one of"):
        step_seed(0, "noise", 0)


def test_training_draws_each_stream_from_its_own_seeds(cifar_dir, tmp_path, monkeypatch):
    """The loop asks for every stream (dropout too, when the model has dropout), and no two of its
    generators share a seed."""
    positions = []

    def recording_step_seed(seed, stream, epoch, step=0):
        positions.append((stream, epoch, step))
        return step_seed(seed, stream, epoch, step)

    monkeypatch.setattr(minivit.train, "step_seed", recording_step_seed)
    config = replace(SMALL, epochs=2, dropout=0.1, train_subset=256)  # 4 steps per epoch
    train(config, tmp_path / "run", data_dir=cifar_dir, progress=False)
    assert {stream for stream, _, _ in positions} == set(STREAMS)
    assert len(positions) == 2 * (1 + 4 * 2)  # per epoch: one shuffle, then augmentation and dropout per step
    assert len({step_seed(config.seed, *position) for position in positions}) == len(positions)


def test_same_seed_same_run_other_seed_differs(cifar_dir, tmp_path):
    short = replace(SMALL, epochs=1)
    train(short, tmp_path / "a", data_dir=cifar_dir, progress=False)
    train(short, tmp_path / "b", data_dir=cifar_dir, progress=False)
    train(replace(short, seed=1), tmp_path / "c", data_dir=cifar_dir, progress=False)
    a, _ = checkpoint_params(tmp_path / "a")
    assert_bit_identical(a, checkpoint_params(tmp_path / "b")[0])
    assert not np.array_equal(a["head.weight"], checkpoint_params(tmp_path / "c")[0]["head.weight"])


def test_resume_after_kill_is_bit_identical(reference, cifar_dir, tmp_path):
    """kill -9 between (or during) epochs, resume: the same parameters, to the last bit, as never stopping."""
    run_dir = tmp_path / "killed"
    proc = cli("train", *small_flags(), "--run-dir", run_dir, "--data-dir", cifar_dir)
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, meta = checkpoint_params(run_dir)
    assert 1 <= meta["state"]["epoch"] < SMALL.epochs, "the kill should land before the run ends"

    resumed = cli("train", "--resume", run_dir, "--data-dir", cifar_dir, "--no-progress")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in out
    assert_bit_identical(checkpoint_params(run_dir)[0], checkpoint_params(reference[0])[0])
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert [m["test_accuracy"] for m in history] == [m["test_accuracy"] for m in reference[1]]


def test_ctrl_c_saves_a_checkpoint_and_resume_is_bit_identical(reference, cifar_dir, tmp_path):
    run_dir = tmp_path / "interrupted"
    proc = cli("train", *small_flags(), "--run-dir", run_dir, "--data-dir", cifar_dir)
    while not (run_dir / "checkpoint.npz").exists():
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"--resume {run_dir}" in err
    _, meta = checkpoint_params(run_dir)
    position = (meta["state"]["epoch"], meta["state"]["step"])
    assert position < (SMALL.epochs, 0), f"stopped at {position}, expected before the end"

    resume(run_dir, data_dir=cifar_dir, progress=False)
    assert_bit_identical(checkpoint_params(run_dir)[0], checkpoint_params(reference[0])[0])


def test_ctrl_c_mid_epoch_resumes_bit_identical(reference, cifar_dir, tmp_path):
    """Ctrl-C at a chosen step of epoch 2: the checkpoint is mid-epoch, and resuming still ends bit-identical."""
    run_dir = tmp_path / "mid-epoch"
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 5") as stopped:
        train(SMALL, run_dir, data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 5)])
    assert f"--resume {run_dir}" in str(stopped.value) and f"minivit.train.resume('{run_dir}')" in str(stopped.value)
    _, meta = checkpoint_params(run_dir)
    assert (meta["state"]["epoch"], meta["state"]["step"]) == (1, 5)
    history = resume(run_dir / "checkpoint.npz", data_dir=cifar_dir, progress=False)  # the file works too
    assert_bit_identical(checkpoint_params(run_dir)[0], checkpoint_params(reference[0])[0])
    assert [m["train_loss"] for m in history] == [m["train_loss"] for m in reference[1]]


def test_gpu_recipe_settings_with_dropouts_resume_bit_identical(cifar_dir, tmp_path):
    """The gpu recipe's settings (mixup and CutMix on half the batches, its schedule) plus dropout and
    PatchDropout, on NumPy with a small hybrid model: every random stream is in use, and a run stopped
    mid-epoch still resumes bit-identical."""
    config = replace(RECIPES["gpu"], backend="numpy", dim=32, depth=1, heads=2, mlp_dim=64, dropout=0.1,
                     patch_dropout=0.25, stem=1, stem_width=24, patch_size=2, epochs=2, batch_size=64,
                     warmup_epochs=0.5, train_subset=1024, test_subset=200)  # fmt: skip
    uninterrupted = train(config, tmp_path / "uninterrupted", data_dir=cifar_dir, progress=False)
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 3"):
        train(config, tmp_path / "stopped", data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 3)])
    resumed = resume(tmp_path / "stopped", data_dir=cifar_dir, progress=False)
    assert_bit_identical(checkpoint_params(tmp_path / "stopped")[0], checkpoint_params(tmp_path / "uninterrupted")[0])
    assert [m["train_loss"] for m in resumed] == [m["train_loss"] for m in uninterrupted]


def test_resume_refuses_a_checkpoint_of_an_earlier_format(reference, cifar_dir, tmp_path):
    """Checkpoints from before the format number (format 1) had unnamed sums and other seeds."""
    arrays = dict(np.load(reference[0] / "checkpoint.npz"))
    meta = json.loads(str(arrays["meta"]))
    del meta["format"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(ValueError, match="training state of format 1, this minivit resumes format 2 only"):
        resume(tmp_path, data_dir=cifar_dir, progress=False)
    load_checkpoint(tmp_path / "checkpoint.npz")  # evaluate and predict still read it


def test_nan_gradients_stop_before_the_update(cifar_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "nan-grad"
    real = minivit.ops.cross_entropy_backward

    def poisoned(cache):
        dlogits = real(cache)
        return dlogits * np.nan if (run_dir / "checkpoint.npz").exists() else dlogits

    monkeypatch.setattr(minivit.ops, "cross_entropy_backward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"gradient norm became nan at epoch 2, step 1; stopped before the"):
        train(SMALL, run_dir, data_dir=cifar_dir, progress=False)
    params, meta = checkpoint_params(run_dir)
    assert (meta["state"]["epoch"], meta["state"]["step"]) == (1, 0)
    assert all(np.isfinite(p).all() for p in params.values())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cifar_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "nan"
    real = minivit.ops.cross_entropy_forward

    def poisoned(logits, labels, label_smoothing=0.0):
        loss, cache = real(logits, labels, label_smoothing)
        if (run_dir / "checkpoint.npz").exists():  # from the first step after epoch 1's checkpoint
            loss = loss * np.nan
        return loss, cache

    monkeypatch.setattr(minivit.ops, "cross_entropy_forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 1.*last good state"):
        train(SMALL, run_dir, data_dir=cifar_dir, progress=False)
    params, meta = checkpoint_params(run_dir)
    assert (meta["state"]["epoch"], meta["state"]["step"]) == (1, 0)
    assert all(np.isfinite(p).all() for p in params.values())
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 1


def test_train_refuses_to_overwrite_a_run(reference, cifar_dir):
    with pytest.raises(ValueError, match="already holds a run"):
        train(SMALL, reference[0], data_dir=cifar_dir, progress=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -1.0}, "lr must be >= 0"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"dtype": "float16"}, "dtype must be"),
        ({"backend": "jax"}, "backend must be"),
        ({"dim": 30, "heads": 4}, "dim 30 is not divisible by heads 4"),
        ({"model": "huge"}, "unknown model 'huge' for task 'classify'"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"heads": 0}, "heads must be at least 1"),
        ({"patch_size": 0}, "patch_size must be at least 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_config_is_a_clear_error(change, message):
    with pytest.raises((ValueError, minivit.data.DataError), match=message):
        replace(SMALL, **change).check()


def test_subset_larger_than_the_dataset_is_a_clear_error(cifar_dir, tmp_path):
    with pytest.raises(ValueError, match="train_subset 60000 is more than the 50000 training images there are"):
        train(replace(SMALL, train_subset=60000), tmp_path / "run", data_dir=cifar_dir, progress=False)


def test_batch_larger_than_subset_is_a_clear_error(cifar_dir, tmp_path):
    config = replace(SMALL, train_subset=10)
    with pytest.raises(ValueError, match="batch_size 64 is larger than the 10 training images"):
        train(config, tmp_path / "run", data_dir=cifar_dir, progress=False)


def test_a_float64_run_keeps_float64_weights_in_its_checkpoint(cifar_dir, tmp_path):
    """load_checkpoint builds the model in the run's dtype: resuming a float64 run continues from its float64
    weights, not from a float32 copy of them."""
    config = replace(SMALL, epochs=1, train_subset=256, dtype="float64")
    train(config, tmp_path / "f64", data_dir=cifar_dir, progress=False)
    model, meta, arrays = load_checkpoint(tmp_path / "f64" / "checkpoint.npz")
    for name, value in model.state_dict().items():
        assert value.dtype == np.float64 and np.array_equal(value, arrays[f"model.{name}"]), name
    meta["train"]["dtype"] = "object"  # a checkpoint is untrusted input: only the two float dtypes are loaded
    np.savez(tmp_path / "bad.npz", meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ValueError, match=r"bad.npz is not a minivit checkpoint .*dtype must be 'float32' or 'float64', got 'object'"):
        load_checkpoint(tmp_path / "bad.npz")
