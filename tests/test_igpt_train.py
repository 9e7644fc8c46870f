"""iGPT's pretraining through the training loop, on a subset of the real CIFAR-10: it learns beyond
colour statistics, resumes bit-identical after kill -9 and Ctrl-C, and its baselines are right."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from helpers import assert_bit_identical

import minivit
from minivit.tasks.igpt import bigram_nats, unigram_nats
from minivit.train import RECIPES, TrainConfig, load_checkpoint, resume, train

# 8×8 images (64 tokens), a palette of 32 colours, two blocks of width 32: seconds per epoch.
SMALL = replace(RECIPES["igpt-cpu"], image_size=8, vocab_size=32, dim=32, depth=2, heads=2, mlp_dim=64, epochs=3,
                batch_size=64, lr=3e-3, warmup_epochs=0.25, train_subset=2048, test_subset=500,
                palette_sample=20_000)  # fmt: skip


def flags(config=SMALL):
    """Command-line flags that train `config` from the igpt-cpu recipe."""
    names = ("image_size", "vocab_size", "dim", "depth", "heads", "mlp_dim", "epochs", "batch_size", "lr",
             "warmup_epochs", "train_subset", "test_subset", "palette_sample")  # fmt: skip
    out = ["--recipe", "igpt-cpu", "--no-progress"]
    for name in names:
        out += ["--" + name.replace("_", "-"), str(getattr(config, name))]
    return out


def params(run_dir):
    model, meta, arrays = load_checkpoint(run_dir / "checkpoint.npz")
    return model.state_dict(), meta, arrays


@pytest.fixture(scope="module")
def reference(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("igpt-reference")
    return run_dir, train(SMALL, run_dir, data_dir=cifar_dir, progress=False)


def test_pretraining_beats_the_unigram_baseline(reference):
    run_dir, history = reference
    _, meta, arrays = params(run_dir)
    unigram, bigram = meta["baselines"]["unigram"], meta["baselines"]["bigram"]
    assert 0 < bigram < unigram < math.log(32)  # neighbours tell more than frequencies, which tell more than nothing
    assert history[-1]["test_loss"] < unigram - 0.3, f"{history[-1]['test_loss']:.3f} nats vs unigram {unigram:.3f}"
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert arrays["palette.centers"].shape == (32, 3)  # the palette travels in the checkpoint
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["task"] == "igpt" and config["model"]["vocab_size"] == 32


def test_resume_after_kill_is_bit_identical(reference, cifar_dir, tmp_path):
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "minivit", "train", *flags(), "--run-dir", str(run_dir),
                             "--data-dir", str(cifar_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= params(run_dir)[1]["state"]["epoch"] < SMALL.epochs, "the kill should land before the run ends"
    result = subprocess.run([sys.executable, "-m", "minivit", "train", "--resume", str(run_dir), "--data-dir",
                             str(cifar_dir), "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nats per token" in result.stdout
    assert_bit_identical(params(run_dir)[0], params(reference[0])[0])
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["test_loss"] for m in history] == [m["test_loss"] for m in reference[1]]


def test_ctrl_c_mid_epoch_resumes_bit_identical(reference, cifar_dir, tmp_path, monkeypatch):
    """Ctrl-C while step 7 of epoch 2 is prepared: the checkpoint is mid-epoch; resumed, the run ends
    with the same bits (the palette comes from the checkpoint, not fitted again)."""
    import minivit.tasks.igpt as task

    real, calls = task.random_flip, []

    def flip_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == SMALL.train_subset // SMALL.batch_size + 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(task, "random_flip", flip_then_ctrl_c)
    run_dir = tmp_path / "stopped"
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 7"):
        train(SMALL, run_dir, data_dir=cifar_dir, progress=False)
    monkeypatch.setattr(task, "random_flip", real)
    monkeypatch.setattr(task.Palette, "fit", lambda *a, **k: pytest.fail("resume fitted the palette again"))
    resumed = resume(run_dir, data_dir=cifar_dir, progress=False)
    assert_bit_identical(params(run_dir)[0], params(reference[0])[0])
    assert [m["train_loss"] for m in resumed] == [m["train_loss"] for m in reference[1]]


def test_baselines_on_known_sequences():
    k = 4
    train_ids = np.array([[0, 1, 2, 3] * 4] * 50)  # every id equally often, always followed by the next
    assert unigram_nats(train_ids, train_ids, k) == pytest.approx(math.log(4))
    nats = bigram_nats(train_ids, train_ids, k)
    assert nats < 0.1 * math.log(4), "a deterministic successor should cost almost nothing"
    shuffled = np.random.default_rng(0).integers(0, k, (50, 16))
    assert bigram_nats(shuffled, shuffled, k) == pytest.approx(math.log(4), abs=0.05)  # no structure to find


@pytest.mark.parametrize(
    "change, message",
    [({"label_smoothing": 0.1}, "label_smoothing does not apply to task 'igpt'"),
     ({"stem": 2}, "stem does not apply to task 'igpt'"),
     ({"task": "denoise"}, "task must be one of"),
     ({"model": "mini"}, "unknown iGPT preset 'mini'")],
)  # fmt: skip
def test_bad_igpt_settings_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **change).check()


def test_classify_refuses_igpt_settings():
    with pytest.raises(ValueError, match="vocab_size does not apply to task 'classify'"):
        TrainConfig(vocab_size=64).check()


def test_image_size_must_divide_the_images(cifar_dir, tmp_path):
    with pytest.raises(ValueError, match="image_size 5 must divide the 32-pixel images"):
        train(replace(SMALL, image_size=5), tmp_path / "run", data_dir=cifar_dir, progress=False)
