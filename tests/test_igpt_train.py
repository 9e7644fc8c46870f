"""iGPT's pretraining through the training loop, on a subset of the real CIFAR-10: it learns beyond
colour statistics, resumes bit-identical after kill -9 and Ctrl-C, and its baselines are right."""

import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from helpers import assert_bit_identical, ctrl_c_at

import minivit
from minivit.checkpoint import load_checkpoint
from minivit.config import RECIPES, TrainConfig
from minivit.tasks.igpt import bigram_nats, mean_nats, position_nats, unigram_nats
from minivit.train import resume, train

# 8×8 images (64 tokens), a palette of 32 colours, two blocks of width 32: seconds per epoch.
SMALL = replace(RECIPES["igpt-cpu"], image_size=8, vocab_size=32, dim=32, depth=2, heads=2, mlp_dim=64, epochs=3,
                batch_size=64, lr=3e-3, warmup_epochs=0.25, train_subset=2048, test_subset=500,
                palette_sample=20_000)  # fmt: skip


def flags(config=SMALL, recipe="igpt-cpu"):
    """Command-line flags that train `config` from `recipe`."""
    names = ("image_size", "vocab_size", "dim", "depth", "heads", "mlp_dim", "epochs", "batch_size", "lr",
             "warmup_epochs", "train_subset", "test_subset", "palette_sample")  # fmt: skip
    out = ["--recipe", recipe, "--no-progress"]
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
    """Ctrl-C at step 7 of epoch 2: the checkpoint is mid-epoch; resumed, the run ends with the same bits
    (the palette comes from the checkpoint, not fitted again)."""
    import minivit.tasks.igpt as task

    run_dir = tmp_path / "stopped"
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 7"):
        train(SMALL, run_dir, data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 7)])
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
    assert bigram_nats(train_ids, shuffled, k) == bigram_nats(train_ids, shuffled, k, width=None)
    # 4×4 images of one colour but for a last column of noise: in raster order a row's first pixel follows
    # the noise; its neighbour above has its colour
    rng = np.random.default_rng(1)
    images = rng.integers(0, 8, (400, 1, 1)).repeat(4, axis=1).repeat(4, axis=2)
    images[:, :, 3] = rng.integers(0, 8, (400, 4))
    ids = images.reshape(400, 16)
    raster, neighbour = bigram_nats(ids, ids, 8), bigram_nats(ids, ids, 8, width=4)
    assert neighbour < raster - 0.3, (neighbour, raster)


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


# -- fine-tuning (Sec. 3.4) -------------------------------------------------------------------------

FINETUNE = replace(RECIPES["igpt-finetune-cpu"], image_size=8, vocab_size=32, dim=32, depth=2, heads=2, mlp_dim=64,
                   epochs=2, lr=3e-3, train_subset=1024, test_subset=500, palette_sample=20_000)  # fmt: skip


@pytest.fixture
def pretrained(reference, tmp_path):
    """A copy of the small pretraining run's checkpoint (so a test may delete it)."""
    path = tmp_path / "pretrained.npz"
    path.write_bytes((reference[0] / "checkpoint.npz").read_bytes())
    return path


def test_finetuning_starts_from_the_pretrained_weights_and_palette(pretrained, cifar_dir, tmp_path):
    """At learning rate 0 nothing moves: the run ends with the checkpoint's weights to the bit, a zero
    classification head (so chance-level predictions of one class) and the checkpoint's palette."""
    config = replace(FINETUNE, init=str(pretrained), lr=0.0, min_lr=0.0, epochs=1)
    history = train(config, tmp_path / "run", data_dir=cifar_dir, progress=False)
    state, meta, arrays = params(tmp_path / "run")
    start, _, start_arrays = load_checkpoint(pretrained)
    trunk = start.state_dict()
    assert not state.pop("clf_head.weight").any() and not state.pop("clf_head.bias").any()
    assert_bit_identical(state, trunk)
    np.testing.assert_array_equal(arrays["palette.centers"], start_arrays["palette.centers"])
    assert history[0]["test_accuracy"] == pytest.approx(0.1, abs=0.05)  # all logits 0: one class for every image
    assert meta["train"]["init"] == str(pretrained)


def test_finetuning_learns_and_resumes_bit_identical_without_the_init_file(pretrained, cifar_dir, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    """Ctrl-C mid-epoch 2, then the init checkpoint is gone: resume needs only the run's own checkpoint
    (weights and palette), and ends with the same bits as a run never stopped."""

    config = replace(FINETUNE, init=str(pretrained))
    reference_dir = tmp_path / "reference"
    history = train(config, reference_dir, data_dir=cifar_dir, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.15  # above chance after 2 short epochs
    run_dir = tmp_path / "stopped"
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 5"):
        train(config, run_dir, data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 5)])
    pretrained.unlink()
    resumed = resume(run_dir, data_dir=cifar_dir, progress=False)
    assert_bit_identical(params(run_dir)[0], params(reference_dir)[0])
    assert [m["test_accuracy"] for m in resumed] == [m["test_accuracy"] for m in history]


def test_finetuning_from_scratch_fits_its_own_palette(cifar_dir, tmp_path, monkeypatch):
    import minivit.tasks.igpt as task

    fits = []
    real = task.Palette.fit
    monkeypatch.setattr(task.Palette, "fit", lambda *a, **k: fits.append(1) or real(*a, **k))
    history = train(replace(FINETUNE, epochs=1), tmp_path / "scratch", data_dir=cifar_dir, progress=False)
    assert fits == [1] and 0 <= history[0]["test_accuracy"] <= 1


def test_bad_init_is_a_clear_error(pretrained, cifar_dir, tmp_path):
    from minivit.checkpoint import start_from
    from minivit.models import IGPTClassifier, ViT

    with pytest.raises(ValueError, match="init nope.npz is not a file"):
        replace(FINETUNE, init="nope.npz").check()
    with pytest.raises(ValueError, match="another architecture than this run's: dim 32 there, 64 here"):
        train(replace(FINETUNE, init=str(pretrained), dim=64), tmp_path / "run", data_dir=cifar_dir, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start
    with pytest.raises(ValueError, match="IGPTClassifier cannot start from init vit.npz, which holds ViT weights"):
        start_from(IGPTClassifier(image_size=4, dim=8, depth=1, heads=2, mlp_dim=8), ViT(), "vit.npz")
    with pytest.raises(ValueError, match="gen_loss_weight does not apply to task 'igpt'"):
        replace(SMALL, gen_loss_weight=1.0).check()


def test_probe_command(reference, cifar_dir, tmp_path):
    """`python -m minivit probe`: every layer of the pretrained model and of its random initialisation,
    and raw pixels, on the same split; a table, probe.json and probe.png."""
    out = tmp_path / "probe"
    result = subprocess.run([sys.executable, "-m", "minivit", "probe", str(reference[0] / "checkpoint.npz"), "--out",
                             str(out), "--train-subset", "600", "--test-subset", "300", "--holdout", "150", "--l2",
                             "1e-3", "1e-1", "--data-dir", str(cifar_dir)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 (final LN)" in result.stdout and "raw pixels (8×8×3)" in result.stdout
    report = json.loads((out / "probe.json").read_text())
    chosen = max(report["layers"]["pretrained"], key=lambda r: r["holdout_accuracy"])  # never on test accuracy
    assert f"best pretrained layer, chosen on the held-out images: {chosen['layer']} of 0-2" in result.stdout
    assert [len(report["layers"][name]) for name in ("pretrained", "random init", "raw pixels")] == [3, 3, 1]
    for rows in report["layers"].values():
        assert all(r["l2"] in (1e-3, 1e-1) and 0 <= r["test_accuracy"] <= 1 for r in rows)
    assert (out / "probe.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "minivit", "probe", str(reference[0] / "checkpoint.npz"),
                          "--holdout", "0", "--train-subset", "100", "--test-subset", "50", "--data-dir",
                          str(cifar_dir)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1 and "holdout must be between 1 and 99" in bad.stderr


def test_finetune_command_line_evaluate_and_predict(pretrained, cifar_dir, tmp_path):
    from PIL import Image

    from minivit.data import load_cifar

    def minivit_cli(*args):
        return subprocess.run([sys.executable, "-m", "minivit", *map(str, args)], capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    run_dir = tmp_path / "ft"
    trained = minivit_cli("train", *flags(replace(FINETUNE, epochs=1), "igpt-finetune-cpu"), "--init", pretrained,
                          "--run-dir", run_dir, "--data-dir", cifar_dir)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "done: test accuracy" in trained.stdout
    checkpoint = run_dir / "checkpoint.npz"
    evaluated = minivit_cli("evaluate", checkpoint, "--data-dir", cifar_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.splitlines()
    assert "test accuracy" in lines[0] and "10000 images" in lines[0] and len(lines) == 11
    image = tmp_path / "test0.png"
    Image.fromarray(load_cifar(data_dir=cifar_dir).test_images[0]).resize((48, 40)).save(image)
    predicted = minivit_cli("predict", checkpoint, image)
    assert predicted.returncode == 0, predicted.stderr
    assert len(predicted.stdout.splitlines()) == 6 and "%" in predicted.stdout
    refused = minivit_cli("predict", pretrained, image)
    assert refused.returncode == 1 and "predict takes one of task classify or finetune" in refused.stderr


def test_the_loss_at_each_position_averages_to_the_mean_loss():
    rng = np.random.default_rng(0)
    model = minivit.IGPT(image_size=4, vocab_size=8, dim=16, depth=1, heads=2, mlp_dim=32).to("numpy", np.float64)
    tokens = rng.integers(0, 8, (10, 16))
    per_position = position_nats(model, tokens, batch_size=3)
    assert per_position.shape == (16,)
    assert per_position.mean() == pytest.approx(mean_nats(model, tokens, batch_size=4), rel=1e-12)
    logits = model(tokens[:, :1])  # position 0's distribution depends on SOS alone
    log_p = logits[:, 0] - np.log(np.exp(logits[:, 0]).sum(axis=1, keepdims=True))
    assert per_position[0] == pytest.approx(-log_p[np.arange(10), tokens[:, 0]].mean(), rel=1e-12)
