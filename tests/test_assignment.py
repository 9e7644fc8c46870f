"""Course assignments: the markers, the student folders `make` writes, and the grades `grade` gives."""

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from minivit.assignment import SETS, markers
from minivit.assignment.grade import grade
from minivit.assignment.make import REPO, blanked_items, make

nbformat = pytest.importorskip("nbformat", reason="making a student folder needs nbformat (the test extra)")

PACKAGE = sorted(p for p in (REPO / "minivit").rglob("*.py") if "assignment" not in p.parts)
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
ORDER = list(SETS)


def rel(path):
    return path.relative_to(REPO).as_posix()


def code_regions():
    """{"path::function"} of every marked region in the package."""
    return {f"{rel(p)}::{r.names[0]}" for p in PACKAGE for r in markers.python_regions(p.read_text(), rel(p))}


def items_of(set_name):
    return {item.name: item for item in SETS[set_name].items}


# -- the markers ----------------------------------------------------------------------------------


def test_every_marked_region_belongs_to_an_item_and_every_item_to_its_regions():
    named = {region for s in SETS.values() for item in s.items for region in item.code if "::" in region}
    found = code_regions()
    assert found - named == set(), "marked regions that no item blanks"
    assert named - found == set(), "items naming regions that are not marked"
    names = {item.name for s in SETS.values() for item in s.items} | {markers.INSTRUCTOR}
    in_notebooks = {}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for i, cell in enumerate(notebook.cells):
            regions = markers.cell_regions(cell, f"{path.name}, cell {i}")
            for r in regions:
                assert set(r.names) <= names, f"{path.name}, cell {i}: unknown item in {r.names}"
                for name in r.names:
                    in_notebooks.setdefault((rel(path), cell.cell_type), set()).add(name)
            for exercise_names, _ in markers.exercises(cell):  # an exercise replaces a region of its cell
                assert any(set(exercise_names) == set(r.names) for r in regions), f"{path.name}, cell {i}"
    for s in SETS.values():
        for item in s.items:
            for region in item.code:
                if "::" not in region:  # a notebook's code regions, with the hint for their stubs
                    assert item.name in in_notebooks.get((region, "code"), ()), f"{item.name} in {region}"


def test_every_items_tests_exist():
    for s in SETS.values():
        for item in s.items:
            for test in item.tests:
                path, name = test.split("::")
                assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), test


@pytest.mark.parametrize("text, message", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a ### BEGIN SOLUTION"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n", "inside the region"),
    ("def f():\n    ### BEGIN SOLUTION linear\n    return 1\n    ### END SOLUTION\n", "belongs to its function"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside a function"),
])  # fmt: skip
def test_bad_markers_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        markers.python_regions(text, "f.py")


def test_a_region_belongs_to_its_innermost_function_and_a_stub_round_trips():
    text = "class A:\n    def f(self):\n        x = 1\n        ### BEGIN SOLUTION\n        return x\n        ### END SOLUTION\n"
    assert [r.names for r in markers.python_regions(text)] == [("A.f",)]
    student = markers.blank_python(text, {"A.f": "write f"})
    assert "return x" not in student and "raise NotImplementedError('write f')" in student
    filled = markers.fill_python(student, markers.solutions(text))
    assert markers.solutions(filled, begin=markers.STUB_BEGIN, end=markers.STUB_END) == markers.solutions(text)


PROGRAM = """
import sys
import numpy as np
from minivit import IGPT, ViT, backend, ops
from minivit.data.palette import Palette
from minivit.optim import AdamW

rng, state = np.random.default_rng(0), {}
images, labels = rng.standard_normal((4, 8, 8, 3)).astype(np.float32), np.array([0, 1, 2, 1])
for pool, kind in (("cls", "1d"), ("mean", "relative")):
    backend.seed(0)
    model = ViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=16, pool=pool,
                pos_embed=kind, dropout=0.1)
    opt = AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        _, cache = ops.cross_entropy_forward(model(images), labels, label_smoothing=0.1)
        model.zero_grad()
        model.backward(ops.cross_entropy_backward(cache))
        opt.step()
    state.update({f"vit-{pool}.{k}": v for k, v in model.state_dict().items()})
backend.seed(0)
igpt, ids = IGPT(image_size=4, vocab_size=7, dim=8, depth=2, heads=2, mlp_dim=16), rng.integers(0, 7, (3, 16))
opt = AdamW(igpt.parameters(), lr=1e-2)
for _ in range(3):
    logits = igpt(ids)
    _, cache = ops.cross_entropy_forward(logits.reshape(-1, 7), ids.reshape(-1))
    igpt.zero_grad()
    igpt.backward(ops.cross_entropy_backward(cache).reshape(logits.shape))
    opt.step()
state["igpt.generated"] = igpt.generate(ids[:, :5], 11, rng=np.random.default_rng(1))
state["palette"] = Palette.fit(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), k=8, seed=0).centers
np.savez(sys.argv[1], **state)
"""


def test_the_package_without_its_markers_trains_bit_identically(tmp_path):
    """The markers are comments: a copy with every marker line removed trains, generates and fits the
    palette to the same bits (ViT with both pools, relative attention, AdamW, iGPT, k-means)."""
    copy = tmp_path / "stripped"
    for path in (REPO / "minivit").rglob("*.py"):
        target = copy / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        target.write_text(text if "assignment" in path.parts else markers.blank_python(text, {}))
    assert "BEGIN SOLUTION" not in (copy / "minivit/ops/layernorm.py").read_text()
    for root, name in ((REPO, "marked.npz"), (copy, "stripped.npz")):
        subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / name)], cwd=root, check=True, timeout=300)
    import numpy as np

    with np.load(tmp_path / "marked.npz") as a, np.load(tmp_path / "stripped.npz") as b:
        assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
        for name in a.files:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


# -- make -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{set: its student folder}, made once."""
    root = tmp_path_factory.mktemp("assignments")
    return {name: make(name, root / name) for name in SETS}


def solution_lines(set_name):
    """Lines of the solutions a folder of `set_name` must not hold: inside its blanked regions (code and
    notebooks), and found nowhere else in what it ships."""
    blanked, hidden, elsewhere = blanked_items(set_name), set(), set()
    regions = {r for _, item in blanked.values() for r in item.code if "::" in r}
    for path in PACKAGE + [REPO / "tests" / "helpers.py"]:
        text = path.read_text()
        lines, inside = text.splitlines(), set()
        for r in markers.python_regions(text, rel(path)):
            if f"{rel(path)}::{r.names[0]}" in regions:
                inside.update(range(r.start, r.end + 1))
                hidden.update(lines[i].strip() for i in range(r.start + 1, r.end))
        elsewhere.update(line.strip() for i, line in enumerate(lines) if i not in inside)
    for path in SETS[set_name].notebooks:
        for cell in nbformat.read(REPO / path, as_version=4).cells:
            lines = cell.source.splitlines()
            for r in markers.cell_regions(cell, path):
                if set(r.names) & set(blanked):
                    hidden.update(line.strip() for line in lines[r.start + 1 : r.end])
            elsewhere.update(
                line.strip() for line in markers.blank_cell(cell, set(blanked), str, path).source.splitlines()
            )
    return {line for line in hidden - elsewhere if len(line) > 8 and not line.startswith("#") or len(line) > 40}


@pytest.mark.parametrize("set_name", ORDER)
def test_a_student_folder_holds_no_solution(folders, set_name):
    folder = folders[set_name]
    hidden = solution_lines(set_name)
    assert len(hidden) > 5  # the check below can fail
    shipped = {}
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            if path.suffix == ".ipynb":
                notebook = nbformat.reads(text, as_version=4)
                assert all(not c.get("outputs") for c in notebook.cells), f"{path.name} has outputs"
                text = "\n".join(c.source for c in notebook.cells)
            shipped[path.relative_to(folder).as_posix()] = {line.strip() for line in text.splitlines()}
    leaks = {name: sorted(lines & hidden)[:3] for name, lines in shipped.items() if lines & hidden}
    assert not leaks, f"solution lines in the student folder: {leaks}"
    assert not (folder / ".git").exists()
    for name, lines in shipped.items():  # no marker left to say where the answers were, bar the tool's own
        if not name.startswith("minivit/assignment/"):
            assert not any("BEGIN SOLUTION" in line for line in lines), name
    kernels = {p.name for p in (folder / "minivit" / "kernels").iterdir()}
    blanked = {region for _, item in blanked_items(set_name).values() for region in item.code}
    for op in ("layernorm", "gelu", "softmax", "attention"):
        if any(r.startswith(f"minivit/ops/{op}.py::{op}_backward") for r in blanked):
            assert f"{op}.py" not in kernels, f"the {op} kernel would stand in for the student's code"
            assert "accelerated" not in (folder / f"minivit/ops/{op}.py").read_text()
    readme = (folder / "README.md").read_text()
    assert f"Assignment {set_name}" in readme and all(item.title in readme for item in SETS[set_name].items)
    assert json.loads((folder / "assignment.json").read_text())["set"] == set_name


def test_make_refuses_a_folder_that_holds_something_and_an_unknown_set(tmp_path):
    (tmp_path / "hw" / "mine.txt").parent.mkdir()
    (tmp_path / "hw" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        make("A1", tmp_path / "hw")
    assert (tmp_path / "hw" / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="unknown assignment set 'A9'; expected one of"):
        make("A9", tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hw"]  # nothing half-written


@pytest.mark.parametrize("set_name", ORDER)
def test_a_student_folder_installs_and_imports(folders, set_name, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True)  # numpy and friends from here; minivit from the folder
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    str(folders[set_name])], check=True, timeout=300, capture_output=True)  # fmt: skip
    found = subprocess.run([python, "-c", "import minivit, minivit.assignment; print(minivit.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert str(env_dir) in found, found


# -- grade ----------------------------------------------------------------------------------------


def solve(folder, set_name, target):
    """A copy of the folder with the set's stubs filled from the project's source: a perfect submission."""
    shutil.copytree(folder, target)
    for path in {r.split("::")[0] for item in SETS[set_name].items for r in item.code if "::" in r}:
        text = (target / path).read_text()
        (target / path).write_text(markers.fill_python(text, markers.solutions((REPO / path).read_text())))
    return target


def scores(results):
    return {t["name"].split(":")[0]: t["score"] for t in results["tests"]}


@pytest.mark.parametrize("set_name", ORDER)
def test_grade_gives_nothing_for_the_blanks_and_everything_for_the_solutions(folders, set_name, tmp_path):
    folder = folders[set_name]
    blank = grade(folder)
    assert blank["set"] == set_name and blank["score"] == 0 and blank["max_score"] > 0
    for test in blank["tests"]:
        assert "NotImplementedError" in test["output"], test
    solved = grade(solve(folder, set_name, tmp_path / "solved"))
    assert solved["score"] == solved["max_score"], solved


def test_a_folder_holds_the_earlier_sets_solved_and_the_later_ones_blank(folders):
    earlier, later = grade(folders["A3"], "A2"), grade(folders["A3"], "A4")
    assert earlier["score"] == earlier["max_score"] > 0, earlier
    assert later["score"] == 0 and all("part of assignment A4, not this one" in t["output"] for t in later["tests"])


def test_a_wrong_gradient_loses_exactly_its_items_points_and_is_named(folders, tmp_path):
    folder = solve(folders["A2"], "A2", tmp_path / "wrong")
    path = folder / "minivit/ops/layernorm.py"
    text = path.read_text()
    assert text.count("(dout * xhat).sum(axis=rows)") == 1
    path.write_text(text.replace("(dout * xhat).sum(axis=rows)", "-(dout * xhat).sum(axis=rows)"))  # dγ's sign
    results = grade(folder)
    assert scores(results) == {"layernorm": 0, "gelu": items_of("A2")["gelu"].points}
    assert re.search(r"dgamma: relative error \d\.\de[+-]\d\d", results["tests"][0]["output"]), results


def test_grade_survives_code_that_hangs_prints_or_kills_the_interpreter(folders, tmp_path):
    folder = solve(folders["A3"], "A3", tmp_path / "unruly")

    def replace(path, old, new):
        text = (folder / path).read_text()
        assert text.count(old) == 1
        (folder / path).write_text(text.replace(old, new))

    replace("minivit/ops/softmax.py", "    y, axis = cache\n", "    y, axis = cache\n    while True:\n        pass\n")
    replace("minivit/ops/losses.py", "    dlogits = xp.exp(log_probs)\n", "    print('debug' * 1000)\n    import os\n"
            "    os._exit(3)\n")  # fmt: skip
    # attention calls softmax_backward, so it hangs too: only the time limit saves the grade
    results = subprocess.run([sys.executable, "-m", "minivit.assignment", "grade", str(folder), "--timeout", "20",
                              "--json", str(tmp_path / "results.json")], capture_output=True, text=True,
                             cwd=REPO, timeout=300)  # fmt: skip
    assert results.returncode == 0, results.stderr
    table = results.stdout
    assert re.search(r"^softmax: .* 0 +10 +timed out after 20", table, re.M), table
    assert re.search(r"^cross_entropy: .* 0 +10 +the tests did not finish \(exit code 3\)", table, re.M), table
    assert re.search(r"^total +0 +40$", table, re.M), table
    gradescope = json.loads((tmp_path / "results.json").read_text())
    assert gradescope["score"] == 0 and [t["max_score"] for t in gradescope["tests"]] == [10, 20, 10]
    assert set(gradescope["tests"][0]) == {"name", "score", "max_score", "output"}


def test_answers_only_grades_the_answers_not_what_else_a_submission_changed(folders, tmp_path):
    """A submission with a wrong layernorm_backward (zeros) that also disabled the tests' assertion: graded as
    it is, it gets full points; --answers-only puts its answers into a fresh folder and gives 0 for it."""
    folder = solve(folders["A2"], "A2", tmp_path / "tampered")
    path = folder / "minivit/ops/layernorm.py"
    student = (folders["A2"] / "minivit/ops/layernorm.py").read_text()
    stub = re.search(r"^ +raise NotImplementedError\(.*\)$", student, re.M).group(0)
    path.write_text(student.replace(stub, "    return 0 * dout, 0 * gamma, 0 * gamma"))
    helpers = folder / "tests/helpers.py"
    helpers.write_text(
        helpers.read_text().replace("    items = errors.items()", "    return\n    items = errors.items()")
    )
    assert scores(grade(folder)) == {"layernorm": 15, "gelu": 10}  # fooled
    result = subprocess.run([sys.executable, "-m", "minivit.assignment", "grade", str(folder), "--answers-only"],
                            capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"^layernorm: .* 0 +15 +.*dx: relative error", result.stdout, re.M), result.stdout
    assert re.search(r"^total +10 +25$", result.stdout, re.M), result.stdout


def test_grade_of_a_folder_that_is_not_a_student_folder_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minivit.assignment", "grade", str(tmp_path)], capture_output=True,
                            text=True, cwd=REPO)  # fmt: skip
    assert result.returncode == 2 and "is not a student folder (no assignment.json); pass --set" in result.stderr


# -- the notebooks --------------------------------------------------------------------------------


@pytest.mark.parametrize("set_name", ORDER)
def test_notebooks_run_up_to_the_first_blank_and_show_its_hint(folders, set_name, cifar_dir, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="running notebooks needs nbclient and ipykernel")
    monkeypatch.setenv("MINIVIT_NOTEBOOK_SIZE", "ci")
    monkeypatch.setenv("MINIVIT_DATA", str(cifar_dir))
    hints = [h for item in SETS[set_name].items for h in item.code.values()]
    for path in SETS[set_name].notebooks:
        notebook = nbformat.read(folders[set_name] / path, as_version=4)
        client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(folders[set_name])}})  # fmt: skip
        with pytest.raises(nbclient.exceptions.CellExecutionError) as stopped:
            client.execute()
        assert stopped.value.ename == "NotImplementedError", f"{path}: {stopped.value}"
        assert any(hint in stopped.value.evalue for hint in hints), f"{path}: {stopped.value.evalue}"
        ran = [c for c in notebook.cells if c.cell_type == "code" and c.execution_count]
        assert len(ran) >= 2, f"{path} stopped before it began"
