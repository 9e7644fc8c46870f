"""Every notebook runs top to bottom (the small size, MINIVIT_NOTEBOOK_SIZE=ci) and is committed without outputs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import backend
from minivit.checkpoint import load_checkpoint

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbformat, nbclient and ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks, so 04 can find the run that 03 wrote (it trains its own otherwise)."""
    return tmp_path_factory.mktemp("notebooks")


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, workdir, cifar_dir, monkeypatch):
    monkeypatch.setenv("MINIVIT_NOTEBOOK_SIZE", "ci")
    monkeypatch.setenv("MINIVIT_DATA", str(cifar_dir))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})  # fmt: skip
    client.execute()
    images = sum(o.get("data", {}).get("image/png") is not None for c in notebook.cells for o in c.get("outputs", []))
    assert images > 0, f"{path.name} showed no figures"


def test_notebook_04_looks_inside_a_hybrid_checkpoint(workdir, cifar_dir, monkeypatch):
    """Notebook 04 on a hybrid run's checkpoint (CHECKPOINT): its own grid and labels from top to bottom."""
    run_dir = workdir / "hybrid-run"
    flags = ["--recipe", "plain-quick", "--stem", "2", "--patch-size", "1", "--dim", "16", "--depth", "2", "--heads", "2",
             "--mlp-dim", "32", "--epochs", "1", "--batch-size", "64", "--train-subset", "256", "--test-subset", "100",
             "--no-progress", "--run-dir", str(run_dir), "--data-dir", str(cifar_dir)]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "minivit", "train", *flags], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("MINIVIT_NOTEBOOK_SIZE", "ci")
    monkeypatch.setenv("MINIVIT_DATA", str(cifar_dir))
    monkeypatch.setenv("MINIVIT_NOTEBOOK04_CHECKPOINT", str(run_dir / "checkpoint.npz"))
    notebook = nbformat.read(NOTEBOOKS[3], as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()  # fmt: skip
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "a hybrid: 2 stride-2 convolutions, then 8×8 = 64 tokens, each covering 4×4 pixels" in printed
    assert "its first convolution's 3×3 filters" in printed  # section 2's label, not E's


def test_notebook_03_trains_what_the_command_line_trains(workdir, cifar_dir):
    """Notebook 03 writes the training loop out by hand and says it computes exactly what
    `train --recipe quick` computes; at the ci size that is these flags (its section 6)."""
    if backend.cupy_available():
        pytest.skip("the notebook trains on CuPy where it can, and CuPy's sums need not repeat bit for bit")
    saved = workdir / "runs" / "notebook03" / "model.npz"
    if not saved.exists():
        pytest.skip("needs the model of test_runs_top_to_bottom[03_train_cifar10], run in the same session")
    flags = ["--recipe", "plain-quick", "--dim", "32", "--depth", "1", "--heads", "2", "--mlp-dim", "64", "--epochs", "1",
             "--batch-size", "64", "--train-subset", "2000", "--test-subset", "1000", "--no-progress"]  # fmt: skip
    run_dir = workdir / "cli-run"
    result = subprocess.run([sys.executable, "-m", "minivit", "train", *flags, "--run-dir", str(run_dir),
                             "--data-dir", str(cifar_dir)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli = load_checkpoint(run_dir / "checkpoint.npz")[0].state_dict()
    with np.load(saved) as notebook:
        assert sorted(notebook.files) == sorted(cli)
        for name, value in cli.items():
            assert np.array_equal(notebook[name], value), f"{name} differs between notebook 03 and the command line"
