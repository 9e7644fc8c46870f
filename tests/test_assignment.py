"""Course assignments: the markers, the student folders `make` writes, and the grades `grade` gives."""

import ast
import csv
import io
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
import venv
import zipfile
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


def test_every_parts_check_and_tests_exist():
    from minivit.assignment import checks

    for s in SETS.values():
        for item in s.items:
            assert sum(part.points for part in item.parts) == item.points > 0
            for part in item.parts:
                assert callable(getattr(checks, part.check, None)), part.check
                assert set(part.code) <= set(item.code) and item.regions(part), (item.name, part.name)
                for test in part.tests:
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


def code_tokens(code):
    """The tokens of Python code with every name a variable could have replaced by N (attributes and keywords
    kept), strings by S, comments and layout dropped: two pieces of code that differ only in their names agree."""
    found, previous = [], None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(code)).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):  # fmt: skip
                continue
            named = tok.type == tokenize.NAME and not keyword.iskeyword(tok.string) and previous != "."
            found.append("N" if named else "S" if tok.type == tokenize.STRING else tok.string)
            previous = tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a fragment (a notebook's magic, an unfinished line): what was read so far
    return found


def units(path, text):
    """{name: source} of each function of a .py file (each code cell of a notebook), where a near-copy could hide."""
    lines = text.splitlines()
    if not path.endswith(".py"):
        return {path: text}
    return {f"{path}::{node.name}": "\n".join(lines[node.lineno - 1 : node.end_lineno]) for node in
            ast.walk(ast.parse(text)) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}  # fmt: skip


def shingles(tokens, k=6):
    return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}


def formulas(markdown):
    """The equations in the LaTeX of a markdown text ($...$ and $$...$$, split at commas, \\Rightarrow and
    \\quad), each with spacing, \\text{} wrappers and blanks removed and every run of letters (a variable's
    name) written v: the same equation, renamed, agrees."""
    found = set()
    for math in re.findall(r"\$\$(.+?)\$\$|\$(.+?)\$", markdown, re.S):
        text = re.sub(r"\\[,;:! ]|\s+", "", "".join(math))
        text = re.sub(r"\\(?:text|mathbf|mathrm|operatorname|textstyle)\{?([^{}]*)\}?", r"\1", text)
        text = re.sub(r"(?<!\\)\b[A-Za-z]+", "v", text)
        for piece in re.split(r",|\\Rightarrow|\\q?quad|\\\\|&", text):
            if "=" in piece and len(piece) >= 6:
                found.add(piece.strip("."))
    return found


def blanked_solutions(set_name):
    """(code of each blanked region, the markdown of each blanked notebook region) of a folder of `set_name`."""
    blanked = blanked_items(set_name)
    regions = {r for _, item in blanked.values() for r in item.code if "::" in r}
    code, markdown = [], []
    for path in PACKAGE:
        text = path.read_text()
        lines = text.splitlines()
        for r in markers.python_regions(text, rel(path)):
            if f"{rel(path)}::{r.names[0]}" in regions:
                code.append((f"{rel(path)}::{r.names[0]}", "\n".join(lines[r.start + 1 : r.end])))
    for path in NOTEBOOKS:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            lines = cell.source.splitlines()
            for r in markers.cell_regions(cell, path):
                if set(r.names) & set(blanked):
                    body = "\n".join(lines[r.start + 1 : r.end])
                    (code if cell.cell_type == "code" else markdown).append((f"{path.name}, cell {i}", body))
    return code, markdown


# Similar on purpose: generation's Block.decode is Block.forward (an earlier set's, solved) with the cache.
INTENDED = {("minivit/nn/transformer.py::Block.decode", "minivit/nn/transformer.py::forward")}

# Formulas a derivation uses and the notebooks state on purpose, outside it (definitions, the chain rule an
# exercise starts from), as `formulas` writes them.
PUBLIC = {
    "v=v\\odotm",
    "v_i=\\sum_jg_j\\partial\\hatx_j/\\partialx_i",
    "\\Phi'=\\varphi",
    "v=\\tanhu",
    "\\tanh'=1-v^2",
    "v=v\\odotout'(v)",
    "v=v^\\top",
    "v=v(v)",
    "v=1/\\sqrt{v_h}",
}


@pytest.mark.parametrize("set_name", ORDER)
def test_a_student_folder_holds_no_solution(folders, set_name):
    """No line of a blanked solution, no near-copy of its code (the same tokens with other names), no formula of
    a blanked derivation (renamed or not), anywhere in what the folder ships: package, tests, notebooks, README."""
    folder = folders[set_name]
    hidden = solution_lines(set_name)
    assert len(hidden) > 5  # the check below can fail
    shipped, code, markdown = {}, {}, {}
    with zipfile.ZipFile(folder / ".assignment/handout.zip") as z:  # what `grade` splices answers into
        assert all((folder / name).read_text() == z.read(name).decode() for name in z.namelist())
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".zip":
            name, text = path.relative_to(folder).as_posix(), path.read_text()
            if path.suffix == ".ipynb":
                notebook = nbformat.reads(text, as_version=4)
                assert all(not c.get("outputs") for c in notebook.cells), f"{path.name} has outputs"
                text = "\n".join(c.source for c in notebook.cells)
                code.update(
                    {f"{name}, cell {i}": c.source for i, c in enumerate(notebook.cells) if c.cell_type == "code"}
                )
                markdown[name] = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
            elif path.suffix == ".py":
                code[name] = text
            else:
                markdown[name] = text
            shipped[name] = {line.strip() for line in text.splitlines()}
    leaks = {name: sorted(lines & hidden)[:3] for name, lines in shipped.items() if lines & hidden}
    assert not leaks, f"solution lines in the student folder: {leaks}"
    solutions, derivations = blanked_solutions(set_name)
    assert solutions and (derivations or set_name == "A4")
    found = {
        name: shingles(code_tokens(unit)) for path, text in code.items() for name, unit in units(path, text).items()
    }
    for region, body in solutions:
        mine = shingles(code_tokens(body))
        for name, theirs in found.items():
            if (region, name) not in INTENDED:
                assert len(mine) < 3 or len(mine & theirs) < len(mine) / 2, f"a near-copy of {region} in {name}"
    shown = {name: formulas(text) for name, text in markdown.items()}
    for where, body in derivations:
        for name, theirs in shown.items():
            same = formulas(body) & theirs - PUBLIC
            assert not same, f"a formula of {where} in {name}: {sorted(same)}"
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


def test_blank_earlier_hands_out_no_earlier_solution(tmp_path):
    folder = make("A3", tmp_path / "hw3", blank_earlier=True)
    text = (folder / "minivit/ops/layernorm.py").read_text()
    assert "(from assignment A2: your answer to it goes here too)" in text and "(g * xhat)" not in text
    assert "layernorm.py" not in {p.name for p in (folder / "minivit/kernels").iterdir()}
    results = grade(solve(folder, "A3", tmp_path / "solved"))  # A3's answers only: the reference stands in for A2's
    assert results["score"] == results["max_score"], results


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
    venv.create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    # numpy, setuptools and friends from the interpreter running the tests (a venv's own or the system's), not
    # from the base interpreter behind it, whose setuptools may be too old to build a wheel; minivit from the folder
    outer = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (Path(site) / "outer.pth").write_text("\n".join(outer) + "\n")
    folder = shutil.copytree(folders[set_name], tmp_path / "folder")  # pip leaves build/ in what it installs
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(folder)],
                   check=True, timeout=300, capture_output=True)  # fmt: skip
    # the README's results travel with the package: notebooks 05-07 show them (package data, not only .py files)
    found = subprocess.run([python, "-c", "import minivit, minivit.assignment, minivit.results; "
                            "print(minivit.__file__, minivit.results.names())"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert "'igpt-cpu'" in found and "'pos-embed'" in found, found
    assert str(env_dir) in found, found


# -- grade ----------------------------------------------------------------------------------------


def solve(folder, set_name, target):
    """A copy of the folder with the set's stubs filled from the project's source: a perfect submission."""
    shutil.copytree(folder, target)
    for path in {r.split("::")[0] for item in SETS[set_name].items for r in item.code if "::" in r}:
        text = (target / path).read_text()
        (target / path).write_text(markers.fill_python(text, markers.solutions((REPO / path).read_text())))
    return target


def answer(folder, path, function, code):
    """Put `code` (lines at the function body's indent, dedented here) in place of the answer region of
    `function` in the folder's file `path`."""
    file = folder / path
    text = file.read_text()
    region = next(r for r in markers.python_regions(text, path, markers.STUB_BEGIN, markers.STUB_END)
                  if r.names[0] == function)  # fmt: skip
    lines = text.splitlines()
    body = [region.indent + line if line else line for line in textwrap.dedent(code).strip("\n").splitlines()]
    file.write_text("\n".join(lines[: region.start + 1] + body + lines[region.end :]) + "\n")


def scores(results):
    return {t["name"]: t["score"] for t in results["tests"]}


def item_scores(results):
    found = {}
    for t in results["tests"]:
        item = t["name"].split(":")[0]
        found[item] = found.get(item, 0) + t["score"]
    return found


def full(set_name):
    return {item.name: item.points for item in SETS[set_name].items}


def full_points(set_name):
    return sum(full(set_name).values())


def grade_command(*args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "minivit.assignment", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)  # fmt: skip


def test_a_comparison_names_what_is_wrong_and_never_the_answer():
    import numpy as np

    from minivit.assignment.grade import compare

    want = {"dx": np.arange(5.0), "drel": np.ones((3, 2)), "db": None}
    assert compare(want, {"dx": np.arange(5.0), "drel": np.ones((3, 2)) * (1 + 1e-12), "db": None}, 1e-10) is None
    assert compare(want, {"dx": np.arange(5.0), "db": None}, 1e-10) == "drel missing"
    assert compare(want, {**want, "dx": np.zeros((3, 5))}, 1e-10) == "dx has shape (3, 5), expected (5,)"
    assert compare(want, {**want, "dx": -np.arange(5.0)}, 1e-10) == "dx: relative error 1.0e+00"
    assert compare(want, {**want, "dx": np.arange(5.0) + 1e-7}, 1e-10) == "dx: relative error 1.2e-08"
    assert compare(want, {**want, "dx": np.full(5, np.nan)}, 1e-10) == "dx: relative error nan"
    assert compare(want, {**want, "dx": np.arange(5.0) + 0j}, 1e-10) == "dx has dtype complex128, expected real numbers"
    assert compare(want, {**want, "db": np.ones(2)}, 1e-10) == "db should be None"
    assert compare(want, {**want, "drel": None}, 1e-10) == "drel is None, expected an array (3, 2)"


@pytest.mark.parametrize("set_name", ORDER)
def test_grade_gives_nothing_for_the_blanks_and_everything_for_the_solutions(folders, set_name, tmp_path):
    folder = folders[set_name]
    blank = grade(folder)
    assert blank["set"] == set_name and blank["reference"] and blank["score"] == 0 and blank["max_score"] > 0
    for test in blank["tests"]:
        assert "NotImplementedError" in test["output"], test
    solved = grade(solve(folder, set_name, tmp_path / "solved"))
    assert solved["score"] == solved["max_score"], solved
    assert [t["name"] for t in solved["tests"]] == [
        f"{i.name}: {p.name}" for i in SETS[set_name].items for p in i.parts
    ]


def test_a_folder_holds_the_earlier_sets_solved_and_the_later_ones_blank(folders):
    assert "NotImplementedError" not in (folders["A3"] / "minivit/ops/layernorm.py").read_text()  # A2: solved
    later = grade(folders["A3"], "A4")
    assert later["score"] == 0 and all("part of assignment A4, not this one" in t["output"] for t in later["tests"])


def test_a_wrong_gradient_loses_exactly_its_parts_points_and_is_named(folders, tmp_path):
    folder = solve(folders["A2"], "A2", tmp_path / "wrong")
    path = folder / "minivit/ops/layernorm.py"
    text = path.read_text()
    assert text.count("(dout * xhat).sum(axis=rows)") == 1
    path.write_text(text.replace("(dout * xhat).sum(axis=rows)", "-(dout * xhat).sum(axis=rows)"))  # dγ's sign
    answer(folder, "minivit/ops/gelu.py", "gelu_backward", "return dout[..., 1:]")  # the wrong shape
    results = grade(folder)
    assert scores(results) == {"layernorm: layernorm_backward": 0, "gelu: exact": 0, "gelu: tanh": 0}
    assert re.fullmatch(r"dgamma: relative error \d\.\de[+-]\d\d", results["tests"][0]["output"]), results
    assert re.fullmatch(r"dx has shape \(\d+, \d+\), expected \(\d+, \d+\)", results["tests"][1]["output"])
    answer(
        folder,
        "minivit/ops/gelu.py",
        "gelu_backward",
        """
        x, s, approximate = cache
        if approximate:
            return None
        return dout * (s + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    """,
    )  # the exact form right (np: the student's own import), the tanh form missing
    text = (folder / "minivit/ops/gelu.py").read_text()
    (folder / "minivit/ops/gelu.py").write_text("import numpy as np\n" + text)
    results = grade(folder)
    assert (
        scores(results)["gelu: exact"] == 0 and results["tests"][1]["output"].startswith("NameError (gelu.py, line")
    )


def test_the_home_grade_takes_the_official_path(folders, tmp_path):
    """In the student's own folder `grade` splices the answers into the handout, as the official grade splices
    them into the reference: an edit outside the answer regions (here the import an answer relies on) counts
    for nothing in both, and a right answer gets its points in both."""
    folder = solve(folders["A2"], "A2", tmp_path / "home")
    path = folder / "minivit/ops/layernorm.py"
    path.write_text(
        "import numpy as np\n" + path.read_text().replace("g = dout * gamma", "g = np.multiply(dout, gamma)")
    )
    official = grade(folder)
    home = grade_command("grade", "--json", tmp_path / "home.json", cwd=folder)
    assert home.returncode == 0, home.stderr
    assert "checked by the gradient checks here" in home.stdout
    mine = json.loads((tmp_path / "home.json").read_text())
    assert scores(mine) == scores(official) == {"layernorm: layernorm_backward": 0, "gelu: exact": 5, "gelu: tanh": 5}
    assert "NameError" in mine["tests"][0]["output"] and "NameError" in official["tests"][0]["output"]
    assert re.search(r"^gelu: exact .* 5 +5 +ok \(\d+ tests passed\)", home.stdout, re.M), home.stdout
    assert not re.search(r"\[kernels-", home.stdout + (tmp_path / "home.json").read_text())


# The attacks of issue 21, each in the answer region of layernorm_backward in set A2: each must cost that
# part its 15 points and nothing else (gelu keeps its 10), whether the screen refuses it (screen.py) or it
# runs and the grade, decided outside the student's process, is not moved (screen off).
REBIND = """
    import minivit.gradcheck
    minivit.gradcheck.relative_error = lambda a, b: 0.0
    return 0 * dout, 0 * gamma, 0 * gamma
"""
FORGE_AND_EXIT = """
    import os, sys
    for arg in sys.argv:
        if arg.startswith("--junitxml="):
            with open(arg.split("=", 1)[1], "w") as f:
                f.write('<testsuites><testsuite><testcase name="test_layernorm"/></testsuite></testsuites>')
    import numpy
    names = numpy.array(["dx", "dgamma", "dbeta"])
    numpy.savez("answer.npz", names=names, none=numpy.zeros(3, bool), a0=0 * dout, a1=0 * gamma, a2=0 * gamma)
    os._exit(0)
"""
NUMERICAL = """
    from minivit.gradcheck import numerical_gradient
    from minivit.ops.layernorm import layernorm_forward
    x, beta = xhat / rstd, 0 * gamma
    forward = lambda: layernorm_forward(x, gamma, beta)[0]
    return numerical_gradient(forward, x, dout), numerical_gradient(forward, gamma, dout), dout.sum(axis=(0, 1))
"""
ATTACKS = {"rebind relative_error": (REBIND, "imports minivit.gradcheck"), "forge a report and exit 0": (
    FORGE_AND_EXIT, "imports os"), "central differences": (NUMERICAL, "imports minivit.gradcheck")}  # fmt: skip


@pytest.mark.parametrize("screened", [True, False], ids=["screen", "sandbox-alone"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_in_an_answer_costs_only_its_own_part(folders, tmp_path, attack, screened):
    code, refusal = ATTACKS[attack]
    folder = solve(folders["A2"], "A2", tmp_path / "attack")
    answer(folder, "minivit/ops/layernorm.py", "layernorm_backward", code)
    results = grade(folder, timeout=10, screen_answers=screened)
    assert scores(results) == {"layernorm: layernorm_backward": 0, "gelu: exact": 5, "gelu: tanh": 5}, results
    why = results["tests"][0]["output"]
    if screened:
        assert refusal in why, why
    else:
        assert re.search(r"relative error|timed out after 10 s", why), why


def test_what_a_child_leaves_behind_does_not_outlive_it_or_move_another_grade(folders, tmp_path):
    """A region that starts a process that leaves its group (setsid) and sleeps, writes to its HOME and TMPDIR,
    and rewrites the grader's own reference of another item (gelu_backward: zeros, as this submission's
    gelu answer is): the process is killed, the files go with the copy, gelu is still graded against the
    reference read before any student code ran."""
    instructor = tmp_path / "instructor"  # a checkout of the grader that the attack may damage
    shutil.copytree(REPO / "minivit", instructor / "minivit", ignore=shutil.ignore_patterns("__pycache__"))
    pids = tmp_path / "pids"
    folder = solve(folders["A2"], "A2", tmp_path / "attack")
    answer(
        folder,
        "minivit/ops/layernorm.py",
        "layernorm_backward",
        f"""
        import os, pathlib, subprocess, tempfile
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        if os.fork() == 0:  # a grandchild that outlives its parent
            os.setsid()
            pathlib.Path("{pids}.grandchild").write_text(str(os.getpid()))
            os.execvp("sleep", ["sleep", "300"])
        pathlib.Path("{pids}").write_text(str(child.pid))
        for where in (pathlib.Path.home(), pathlib.Path(tempfile.gettempdir())):
            (where / "left-behind").write_text("x")
        pathlib.Path("{pids}.home").write_text(str(pathlib.Path.home()))
        gelu = pathlib.Path("{instructor}/minivit/ops/gelu.py")
        gelu.write_text(gelu.read_text().replace("### BEGIN SOLUTION", "### BEGIN SOLUTION\\n    return 0 * dout", 1))
        import time
        time.sleep(300)
    """,
    )
    answer(folder, "minivit/ops/gelu.py", "gelu_backward", "return 0 * dout")
    result = grade_command("grade", folder, "--timeout", 15, "--no-screen", cwd=instructor)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^layernorm: layernorm_backward +0 +15 +timed out after 15 s", result.stdout, re.M), result.stdout
    assert re.search(r"^gelu: exact +0 +5 +dx: relative error", result.stdout, re.M), result.stdout
    assert "return 0 * dout" in (instructor / "minivit/ops/gelu.py").read_text()  # the attack did run
    for name in ("", ".grandchild"):
        pid = int(Path(f"{pids}{name}").read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3], name
    assert not Path(Path(f"{pids}.home").read_text()).exists()


def test_an_answer_that_takes_too_much_memory_or_prints_without_end_loses_its_part(folders, tmp_path):
    folder = solve(folders["A2"], "A2", tmp_path / "greedy")
    answer(folder, "minivit/ops/layernorm.py", "layernorm_backward", """
        big = xhat.ravel()[0] + np.ones(6 << 27)  # 6 GiB, above the child's 4 GiB of address space
        return big, big, big
    """)
    answer(folder, "minivit/ops/gelu.py", "gelu_backward", "while True:\n    print('x' * 10**6)")
    (folder / "minivit/ops/layernorm.py").write_text("import numpy as np\n" + (folder / "minivit/ops/layernorm.py").read_text())
    results = grade(folder, timeout=30)
    assert scores(results) == {"layernorm: layernorm_backward": 0, "gelu: exact": 0, "gelu: tanh": 0}
    assert "NameError" in results["tests"][0]["output"]  # the import outside the region does not count
    answer(folder, "minivit/ops/layernorm.py", "layernorm_backward", """
        from numpy import ones
        big = xhat.ravel()[0] + ones(6 << 27)
        return big, big, big
    """)
    results = grade(folder, timeout=30)
    assert results["tests"][0]["output"].startswith("MemoryError"), results
    assert results["tests"][1]["output"].startswith("OSError (gelu.py, line"), results  # "File too large"


def test_a_child_cannot_flood_hang_or_speak_through_the_grader(folders, tmp_path):
    """What the child leaves is read as data within limits: an exception's message (which could carry the
    reference, read from the grader's files) is not shown, a FIFO in place of its answer does not block,
    and an answer that unpacks to gigabytes is refused."""
    folder = solve(folders["A3"], "A3", tmp_path / "loud")
    answer(folder, "minivit/ops/softmax.py", "softmax_backward", "raise ValueError('a secret from the reference')")
    answer(folder, "minivit/ops/losses.py", "cross_entropy_backward", """
        import os
        os.mkfifo("answer.npz")
        os._exit(0)
    """)
    answer(folder, "minivit/ops/attention.py", "attention_core_backward", """
        import numpy as np
        np.savez_compressed("answer.npz", names=np.array(["dx"]), none=np.zeros(1, bool), a0=np.zeros(40 << 20))
        import os
        os._exit(0)
    """)
    results = grade(folder, timeout=30, screen_answers=False)
    out = {t["name"]: t["output"] for t in results["tests"]}
    assert scores(results) == {name: 0 for name in out}, out
    assert re.fullmatch(r"ValueError \(softmax\.py, line \d+\) \(.* shows the details\)", out["softmax: softmax_backward"])
    assert out["cross_entropy: cross_entropy_backward"] == "the check did not finish (exit code 0)"
    assert out["attention: full"] == "its outputs take more than 256 MiB", out


def test_odd_submissions_get_a_message_not_a_crash(folders, tmp_path):
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as z:
        z.writestr("x" * 300 + ".py", "")  # a name too long for the file system
        z.writestr("minivit", "a file where a folder should be")
        z.writestr("minivit/ops/layernorm.py", "")
        z.writestr("manifest.json", json.dumps({"set": ["A2"]}))
    with pytest.raises(ValueError, match="does not name a known assignment set"):
        grade(odd)
    results = grade(odd, "A2")
    assert results["score"] == 0 and "missing from the submission" in results["tests"][0]["output"]
    deep = solve(folders["A2"], "A2", tmp_path / "deep")
    answer(deep, "minivit/ops/layernorm.py", "layernorm_backward", "return " + "(" * 5000 + "dout" + ")" * 5000)
    message = grade(deep)["tests"][0]["output"]
    assert "nested too deeply" in message or "syntax error" in message, message


def test_one_submission_cannot_change_anothers_grade_in_a_batch(folders, tmp_path):
    instructor = tmp_path / "instructor"
    shutil.copytree(REPO / "minivit", instructor / "minivit", ignore=shutil.ignore_patterns("__pycache__"))
    many = tmp_path / "many"
    alice = solve(folders["A2"], "A2", many / "alice")
    answer(alice, "minivit/ops/gelu.py", "gelu_backward", f"""
        import pathlib
        ln = pathlib.Path("{instructor}/minivit/ops/layernorm.py")
        ln.write_text(ln.read_text().replace("rstd = 1.0 / xp.sqrt(var + eps)", "rstd = 2.0 / xp.sqrt(var + eps)"))
        raise SystemExit
    """)
    assert "rstd = 1.0 / xp.sqrt(var + eps)" in (REPO / "minivit/ops/layernorm.py").read_text()
    solve(folders["A2"], "A2", many / "bob")
    result = grade_command("grade", many, "--set", "A2", "--no-screen", "--out", tmp_path / "grades", cwd=instructor)
    assert result.returncode == 0, result.stderr
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "grades" / "gradebook.csv").open())}
    assert "rstd = 2.0" in (instructor / "minivit/ops/layernorm.py").read_text()  # the attack ran
    assert rows["bob"]["score"] == "25" and rows["alice"]["score"] == "15", rows


def test_a_wrong_block_forward_costs_only_the_forward(folders, tmp_path):
    folder = solve(folders["A4"], "A4", tmp_path / "block")
    text = (folder / "minivit/nn/transformer.py").read_text()
    assert text.count("        z += x\n") == 2  # Block.forward's, then Block.decode's (`solve` fills every stub)
    (folder / "minivit/nn/transformer.py").write_text(text.replace("        z += x\n", "        z += 2 * x\n", 1))
    results = scores(grade(folder))
    assert results["block: forward"] == 0 and results["block: backward"] == 9, results


def test_items_are_graded_independently(folders, tmp_path):
    """A wrong softmax_backward (which attention_core_backward calls) costs softmax its points, not attention."""
    folder = solve(folders["A3"], "A3", tmp_path / "independent")
    answer(folder, "minivit/ops/softmax.py", "softmax_backward", "y, axis = cache\nreturn dout * y")
    assert item_scores(grade(folder)) == {**full("A3"), "softmax": 0}


def test_a_kmeans_update_needs_only_what_its_hint_names(folders, tmp_path):
    folder = solve(folders["A5"], "A5", tmp_path / "kmeans")
    answer(
        folder,
        "minivit/data/palette.py",
        "Palette.fit",
        """
        for j in range(k):
            if counts[j] > 0:
                centers[j] = pixels[ids == j].mean(axis=0)
    """,
    )
    assert item_scores(grade(folder))["palette"] == full("A5")["palette"]


def test_a_broken_submission_gets_a_message_per_item_and_a_complete_json(folders, tmp_path):
    folder = solve(folders["A3"], "A3", tmp_path / "broken")
    softmax = folder / "minivit/ops/softmax.py"
    softmax.write_text(softmax.read_text().replace("    ### END YOUR CODE\n", "", 1))  # a marker deleted
    attention = folder / "minivit/ops/attention.py"
    text = attention.read_text()
    region = next(r for r in markers.python_regions(text, "attention.py", markers.STUB_BEGIN, markers.STUB_END)
                  if r.names[0] == "attention_core_backward")  # fmt: skip
    lines = text.splitlines()
    doubled = (
        lines[: region.start + 1] + ["    ### END YOUR CODE", "    ### YOUR CODE HERE"] + lines[region.start + 1 :]
    )
    attention.write_text("\n".join(doubled) + "\n")  # the region split in two
    (folder / "minivit/ops/losses.py").unlink()
    result = grade_command("grade", folder, "--json", tmp_path / "results.json")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 0 and len(results["tests"]) == 5 and results["execution_time"] >= 0
    out = {t["name"]: t["output"] for t in results["tests"]}
    assert "### YOUR CODE HERE is never closed" in out["softmax: softmax_backward"], out
    assert "attention_core_backward has 2 answer regions (### YOUR CODE HERE ... ### END YOUR CODE), the handout has 1" in out[
        "attention: full"], out  # fmt: skip
    assert out["cross_entropy: cross_entropy_backward"] == "minivit/ops/losses.py is missing from the submission"
    assert {t["status"] for t in results["tests"]} == {"failed"} and results["visibility"] == "visible"
    attention.write_text("\n".join(lines[: region.start + 1] + ["    x = ("] + lines[region.start + 1 :]) + "\n")
    assert "syntax error" in grade(folder)["tests"][1]["output"]


def test_loose_files_and_a_zip_from_submit_are_graded_alike(folders, tmp_path):
    solved = solve(folders["A2"], "A2", tmp_path / "solved")
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in ("minivit/ops/layernorm.py", "minivit/ops/gelu.py"):
        shutil.copy(solved / path, loose)
    assert grade(loose, "A2")["score"] == 25
    nested = tmp_path / "nested"  # a whole folder one level down: minivit/ops/attention.py beside kernels/attention.py
    solve(folders["A5"], "A5", nested / "hw5")
    shutil.copytree(nested / "hw5/minivit", nested / "hw5/build/lib/minivit")  # what pip install leaves
    assert (nested / "hw5/minivit/kernels/attention.py").is_file()
    assert grade(nested, "A5")["score"] == full_points("A5")
    result = grade_command("submit", solved, cwd=tmp_path)
    assert result.returncode == 0 and "hand in this file" in result.stdout, result.stderr
    zipped = solved / "submission-A2.zip"
    with zipfile.ZipFile(zipped) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert sorted(z.namelist()) == ["manifest.json", "minivit/ops/gelu.py", "minivit/ops/layernorm.py"]
    assert manifest["set"] == "A2" and manifest["unanswered"] == [] and len(manifest["files"]) == 2
    assert grade(zipped)["score"] == 25  # the set from the manifest
    blank = grade_command("submit", folders["A2"], "--out", tmp_path / "blank.zip")
    assert "not answered yet" in blank.stdout and "layernorm_backward" in blank.stdout, blank.stdout
    softmax = solve(folders["A3"], "A3", tmp_path / "unclosed") / "minivit/ops/softmax.py"
    softmax.write_text(softmax.read_text().replace("    ### END YOUR CODE\n", "", 1))
    refused = grade_command("submit", softmax.parents[2])
    assert refused.returncode == 2 and "cannot submit" in refused.stderr and "never closed" in refused.stderr
    assert not (softmax.parents[2] / "submission-A3.zip").exists()


def test_a_zip_cannot_write_outside_its_folder(folders, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
        z.writestr("/tmp/absolute-minivit-test.txt", "x")
        z.writestr("manifest.json", json.dumps({"set": "A2"}))
    results = grade(evil)
    assert results["score"] == 0 and not (tmp_path.parent / "outside.txt").exists()
    assert all("missing from the submission" in t["output"] for t in results["tests"])


def test_a_folder_of_submissions_gives_a_gradebook(folders, tmp_path):
    many = tmp_path / "many"
    solve(folders["A2"], "A2", many / "ada")
    shutil.copytree(folders["A2"], many / "bob")
    (many / "eve.zip").write_text("not a zip")
    result = grade_command("grade", many, "--set", "A2", "--out", tmp_path / "grades")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "grades" / "gradebook.csv").open()))
    assert [(r["student"], r["score"]) for r in rows] == [("ada", "25"), ("bob", "0"), ("eve", "0")]
    assert rows[0]["gelu: tanh"] == "5" and rows[0]["max_score"] == "25"
    eve = json.loads((tmp_path / "grades" / "eve.json").read_text())
    assert eve["score"] == 0 and "neither a folder nor a zip" in eve["tests"][0]["output"]


def test_the_gradescope_bundle_grades_a_submission_in_a_fake_autograder(folders, tmp_path):
    result = grade_command("gradescope", "A2", "--out", tmp_path / "autograder.zip")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(tmp_path / "autograder.zip") as z:
        z.extractall(root / "source")
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert "numpy" in (root / "source/setup.sh").read_text()
    solved = solve(folders["A2"], "A2", tmp_path / "solved")
    answer(solved, "minivit/ops/gelu.py", "gelu_backward", "x, s, approximate = cache\nreturn dout * s")
    (root / "submission").mkdir()
    for path in ("minivit/ops/layernorm.py", "minivit/ops/gelu.py"):  # uploaded as files, as Gradescope keeps them
        shutil.copy(solved / path, root / "submission")
    (root / "results").mkdir()
    run = subprocess.run(["bash", root / "source/run_autograder"], env={**os.environ, "AUTOGRADER": str(root),
                         "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = json.loads((root / "results/results.json").read_text())
    assert results["score"] == 15 and isinstance(results["execution_time"], int)
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in results["tests"]] == [
        ("layernorm: layernorm_backward", 15, 15, "passed"), ("gelu: exact", 0, 5, "failed"),
        ("gelu: tanh", 0, 5, "failed")]  # fmt: skip


def test_an_nbgrader_course_generates_and_autogrades_a_set(tmp_path):
    """The set as nbgrader source: nbgrader's generate_assignment, then autograde of a solved and a blank copy."""
    pytest.importorskip("nbgrader", reason="the nbgrader course test needs nbgrader (.ci/run installs it)")
    course = tmp_path / "course"
    made = grade_command("nbgrader", "A2", "--course", course)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # its alembic

    def nbgrader(*args):
        run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                             text=True, timeout=900)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    nbgrader("generate_assignment", "A2", "--force")
    release = course / "release" / "A2"
    assert sorted(p.name for p in release.glob("*.ipynb")) == ["02_backprop.ipynb", "grade_A2.ipynb"]
    assert "raise NotImplementedError" in (release / "minivit/ops/layernorm.py").read_text()
    solve(release, "A2", course / "submitted" / "alice" / "A2")
    wrong = solve(release, "A2", tmp_path / "wrong")
    answer(wrong, "minivit/ops/gelu.py", "gelu_backward", "x, s, approximate = cache\nreturn dout * s")
    shutil.copytree(wrong, course / "submitted" / "carol" / "A2")
    shutil.copytree(release, course / "submitted" / "bob" / "A2")
    nbgrader("autograde", "A2", "--create", "--force")
    nbgrader("export", "--to", str(tmp_path / "grades.csv"))
    with open(tmp_path / "grades.csv") as f:
        scores = {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}
    assert scores == {"alice": (25.0, 25.0), "bob": (0.0, 25.0), "carol": (15.0, 25.0)}, scores
    assert grade_command("nbgrader", "A1", "--course", course).returncode == 0  # a notebook with code to write
    nbgrader("generate_assignment", "A1", "--force")
    cells = [c.source for c in nbformat.read(course / "release/A1/01_patches.ipynb", as_version=4).cells]
    assert sum("# YOUR CODE HERE\nraise NotImplementedError()" in c for c in cells) == 2
    assert not any("transpose(0, 2, 1, 3, 4)" in c or "BEGIN SOLUTION" in c for c in cells)
    config = (course / "nbgrader_config.py").read_text()
    assert "'A1': ['minivit/ops/linear.py', 'minivit/ops/patches.py']" in config
    assert "'A2': ['minivit/ops/gelu.py', 'minivit/ops/layernorm.py']" in config


def test_grade_of_a_folder_that_is_not_a_student_folder_is_a_clear_error(tmp_path):
    (tmp_path / "x.py").write_text("")
    result = grade_command("grade", tmp_path)
    assert result.returncode == 2 and "is not a student folder (no assignment.json or manifest.json)" in result.stderr


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
