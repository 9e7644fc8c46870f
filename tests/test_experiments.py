"""The experiment runner: every row and seed trained through the loop, a table over seeds, and a
partly done table finished without retraining what is done."""

import json
import shutil
import subprocess
import sys

import pytest

from minivit import experiments


@pytest.fixture(scope="module")
def mpp_table(cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    return out, experiments.run("mpp", out, size="ci", seeds=(0, 1), data_dir=cifar_dir, progress=False,
                                log=lambda _: None)  # fmt: skip


def test_a_table_over_seeds(mpp_table):
    out, results = mpp_table
    folder = out / "mpp"
    assert list(results["rows"]) == ["fine-tuned after masked patch prediction",
                                     "from scratch, twice the epochs (same compute)"]  # the pretraining is no row
    for scores in results["rows"].values():  # every run scored on the held-out training images and the test set
        assert scores.keys() == {"val", "test"} and all(len(a) == 2 and all(0 <= x <= 1 for x in a)
                                                        for a in scores.values())  # fmt: skip
    assert json.loads((folder / "results.json").read_text()) == results
    text = (folder / "results.md").read_text()
    assert "| fine-tuned after masked patch prediction" in text and "The paper:" in text
    assert "(best on validation)" in text and "validation: mean" in text
    assert results["code"] and all(" on " in version for version in results["code"])  # the commit and CPU
    assert (folder / "results.png").stat().st_size > 5_000
    from minivit.checkpoint import load_checkpoint

    scratch = load_checkpoint(folder / "from-scratch-twice-the-epochs-same-compute" / "seed1" / "checkpoint.npz")[1]
    tuned = load_checkpoint(folder / "fine-tuned-after-masked-patch-prediction" / "seed1" / "checkpoint.npz")[1]
    assert scratch["train"]["epochs"] == 2 * tuned["train"]["epochs"]
    assert tuned["train"]["init"].endswith("masked-patch-prediction/seed1/checkpoint.npz")
    assert scratch["train"]["seed"] == 1


def test_running_again_trains_only_what_is_missing(mpp_table, cifar_dir, monkeypatch):
    out, results = mpp_table
    shutil.rmtree(out / "mpp" / "from-scratch-twice-the-epochs-same-compute" / "seed0")
    trained = []
    real = experiments.train
    monkeypatch.setattr(experiments, "train", lambda config, run_dir, **kw: trained.append(run_dir) or real(
        config, run_dir, **kw))  # fmt: skip
    monkeypatch.setattr(experiments, "resume", lambda *a, **k: pytest.fail("nothing was stopped"))
    again = experiments.run("mpp", out, size="ci", seeds=(0, 1), data_dir=cifar_dir, progress=False, log=lambda _: None)
    assert [p.parent.name + "/" + p.name for p in trained] == ["from-scratch-twice-the-epochs-same-compute/seed0"]
    assert again["rows"] == results["rows"]  # the same bits: the retrained run repeats itself


def test_a_row_changed_since_its_run_is_a_clear_error_not_a_mixed_table(mpp_table, cifar_dir, monkeypatch):
    out, _ = mpp_table
    experiment = experiments.EXPERIMENTS["mpp"]
    rows = (*experiment.rows[:2], experiments.Row(experiment.rows[2].label, {"epochs": "2x", "lr": 5e-4}))
    monkeypatch.setitem(experiments.EXPERIMENTS, "mpp", experiments.replace(experiment, rows=rows))
    with pytest.raises(ValueError, match=r"was trained with other settings than this row has: lr 0.002 \(now 0.0005\)"):
        experiments.run("mpp", out, size="ci", seeds=(0, 1), data_dir=cifar_dir, progress=False, log=lambda _: None)


def test_position_embedding_table_from_the_command_line(cifar_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "minivit", "experiment", "pos-embed", "--size", "ci", "--seeds",
                             "0", "--out", str(tmp_path), "--no-progress", "--data-dir", str(cifar_dir)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| relative" in result.stdout and "| 1-D, every layer, shared" in result.stdout
    assert (tmp_path / "pos-embed" / "results.md").is_file()


def test_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'colour'"):
        experiments.run("colour", tmp_path)
    with pytest.raises(ValueError, match="size must be one of"):
        experiments.run("pool", tmp_path, size="huge")


def test_fine_tuning_at_a_higher_resolution(cifar_dir, tmp_path):
    """The resolution table: a 32-pixel run, then one epoch at 32 and one at 48 pixels from it (the
    ViT resized: 64 patches of 4×4 become 144, its position embeddings interpolated)."""
    from minivit.checkpoint import load_checkpoint

    results = experiments.run("resolution", tmp_path, size="ci", seeds=(0,), data_dir=cifar_dir, progress=False,
                              log=lambda _: None)  # fmt: skip
    assert list(results["rows"]) == ["then 1 epoch more at 32 px", "then 1 epoch at 48 px (CIFAR upsampled)",
                                     "then 1 epoch more at 32 px, lr 2e-3", "then 1 epoch at 48 px, lr 2e-3"]
    model = load_checkpoint(tmp_path / "resolution" / "then-1-epoch-at-48-px-cifar-upsampled" / "seed0" /
                            "checkpoint.npz")[0]  # fmt: skip
    assert model.config.image_size == 48 and model.pos_embed.shape == (1, 1 + 144, 16)


def test_the_best_row_is_chosen_on_the_validation_images_not_the_test_images():
    results = {"title": "t", "paper": "p", "size": "ci", "seeds": [0, 1], "code": ["abc on CPU"], "rows": {
        "best on test": {"val": [0.30, 0.32], "test": [0.40, 0.41]},
        "best on validation": {"val": [0.35, 0.36], "test": [0.33, 0.34]}}}  # fmt: skip
    assert experiments.best_row(results) == "best on validation"
    text = experiments.table(results)
    assert "| best on validation (best on validation) | 35.5% | 35.0%–36.0% | **33.5%**" in text
    assert "| best on test | 31.0%" in text
