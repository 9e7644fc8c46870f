"""Every notebook runs top to bottom (the small size, MINIVIT_NOTEBOOK_SIZE=ci) and is committed without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbformat, nbclient and ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks, so 04 can find the run that 03 wrote (it trains its own otherwise)."""
    return tmp_path_factory.mktemp("notebooks")


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


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
