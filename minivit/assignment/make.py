"""`make`: a self-contained student folder for one assignment set, written fresh (no git history).

DIR/README.md          what to implement, for how many points, how to check it
DIR/assignment.json    which set this is (what `grade` reads)
DIR/pyproject.toml     `pip install -e ".[test,notebooks]"` as in the project
DIR/minivit/           the package: the set's regions (and every later set's) are stubs; the CPU
                       kernels of the blanked ops are gone, so the student's code is what trains
DIR/tests/             the tests that grade every set (they hold no solution)
DIR/notebooks/         the set's notebooks: its regions cut, its exercises shown, outputs cleared
DIR/.assignment/handout.zip   the package and tests as handed out, what `grade` splices answers into

With nbgrader=True (`python -m minivit.assignment nbgrader`), DIR is an nbgrader source assignment:
the notebooks at its top, the set's own code regions kept in solution cells, grade_SET.ipynb.
"""

import ast
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..atomic import atomic_file
from . import markers
from .sets import SETS

REPO = Path(__file__).resolve().parents[2]  # the checkout: minivit/, tests/, notebooks/, pyproject.toml
SUPPORT = ("tests/conftest.py", "tests/helpers.py")  # what every test file imports
TOOL = "minivit/assignment/"  # this package: shipped as it is, for `grade`
HANDOUT = ".assignment/handout.zip"  # the package and tests as handed out: what `grade` splices answers into


def blanked_items(set_name, keep_later=False, blank_earlier=False):
    """{item name: (the set it belongs to, Item)} of what a folder of `set_name` blanks: its own items, every
    later set's unless keep_later (not handed out yet), and every earlier set's if blank_earlier (a course
    that reuses its sets across years hands out no earlier solution)."""
    names = list(SETS)
    if set_name not in SETS:
        raise ValueError(f"unknown assignment set {set_name!r}; expected one of {names}")
    at = names.index(set_name)
    sets = names[0 if blank_earlier else at : at + 1 if keep_later else len(names)]
    return {item.name: (s, item) for s in sets for item in SETS[s].items}


def later(owner, set_name):
    """Whether set `owner` comes after `set_name` (is not handed out yet when `set_name` is)."""
    order = list(SETS)
    return order.index(owner) > order.index(set_name)


def hints(set_name, keep_later=False, blank_earlier=False):
    """{region: the hint its stub raises} for every region a folder of `set_name` blanks."""
    found = {}
    for owner, item in blanked_items(set_name, keep_later, blank_earlier).values():
        for region, hint in item.code.items():
            if owner == set_name:
                found[region] = hint
            elif later(owner, set_name):
                found[region] = f"{region.split('::')[-1]}: part of assignment {owner}, not this one"
            else:
                found[region] = f"{hint} (from assignment {owner}: your answer to it goes here too)"
    return found


def test_files():
    """The test files that grade any set."""
    return sorted({test.split("::")[0] for s in SETS.values() for item in s.items for part in item.parts
                   for test in part.tests})  # fmt: skip


def make(set_name, out, root=REPO, keep_later=False, blank_earlier=False, nbgrader=False):
    """Write the student folder of `set_name` to `out` (which must not exist, or be empty); returns its path.

    nbgrader: write it as an nbgrader source assignment instead (out = COURSE/source/SET): the notebooks at
    its top, the set's own code regions left in nbgrader's solution cells for its generate_assignment to cut,
    and grade_SET.ipynb, one locked autograded cell per part worth the part's points.

    It is built in a temporary folder beside `out` and renamed into place, so a failure leaves nothing."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; give a new path")
    blanks, blanked = hints(set_name, keep_later, blank_earlier), blanked_items(set_name, keep_later, blank_earlier)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 is for a temporary folder, not the one handed out
    try:
        handout = package(read_sources(root), blanks)
        for path in (*SUPPORT, *test_files(), "pyproject.toml"):
            handout[path] = (root / path).read_text()
        write(handout, tmp)
        (tmp / HANDOUT).parent.mkdir()
        with zipfile.ZipFile(tmp / HANDOUT, "w", zipfile.ZIP_DEFLATED) as z:  # what `grade` splices answers into
            for path, text in sorted(handout.items()):
                z.writestr(path, text)
        for path in SETS[set_name].notebooks:
            target = tmp / (Path(path).name if nbgrader else path)  # nbgrader looks at the assignment's top only
            _notebook(root / path, target, path, set_name, blanked, nbgrader)
        if nbgrader:
            _grade_notebook(set_name, tmp / f"grade_{set_name}.ipynb")
        (tmp / "assignment.json").write_text(json.dumps({"set": set_name, "title": SETS[set_name].title}) + "\n")
        (tmp / "README.md").write_text(readme(set_name))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if nbgrader:
        answered = {region.split("::")[0] for owner, item in blanked.values() if not later(owner, set_name)
                    for region in item.code if "::" in region}  # fmt: skip
        _keep_answers_at_autograde(out.parents[1], set_name, sorted(answered))
    return out


def _keep_answers_at_autograde(course, set_name, files):
    """nbgrader's autograde puts the source's own copy over every file of a submission but its notebooks; the
    answers of this set are in .py files: say so in the course's nbgrader_config.py (created if missing)."""
    config = Path(course) / "nbgrader_config.py"
    line = (f"c.Autograde.exclude_overwriting.update({{{set_name!r}: {files!r}}})  "
            "# minivit: the students' answers are in these files\n")  # fmt: skip
    text = config.read_text() if config.is_file() else "c = get_config()  # noqa: F821\n"
    if line not in text:
        with atomic_file(config, suffix=".py") as f:  # the instructor's own settings are in it too
            f.write((text + ("" if text.endswith("\n") else "\n") + line).encode())


def read_sources(root):
    """{path: text} of every .py file of the package under root (the template a folder or a copy is made from),
    and of the data files it reads (the README's results, which notebooks 05-07 show)."""
    package_dir = Path(root) / "minivit"
    files = [*sorted(package_dir.rglob("*.py")), *sorted((package_dir / "results").glob("*.json"))]
    return {p.relative_to(root).as_posix(): p.read_text() for p in files}


def package(sources, blanks):
    """{path: text} of the package with the regions in `blanks` ({region: hint}) stubbed, the other regions'
    markers removed, and the kernels standing in for a blanked function gone; the assignment tool's own
    files (which describe the markers and hold none) as they are."""
    code = {path: text for path, text in sources.items() if not path.startswith(TOOL) and path.endswith(".py")}
    blanked_here = {}
    for path, text in code.items():
        functions = {r.names[0] for r in markers.python_regions(text, path)}
        blanked_here[path] = {region.split("::")[1]: hint for region, hint in blanks.items()
                              if region.startswith(path + "::")}  # fmt: skip
        unknown = sorted(set(blanked_here[path]) - functions)
        if unknown:
            raise ValueError(f"{path}: no solution region in {unknown}")
    missing = sorted({r.split("::")[0] for r in blanks if "::" in r} - set(code))
    if missing:
        raise ValueError(f"the sets name solution regions in files that do not exist: {missing}")
    removed = _kernels_to_remove(code, blanked_here)
    out = {path: text for path, text in sources.items() if path.startswith(TOOL) or not path.endswith(".py")}
    for path, text in code.items():
        if path in removed:
            continue
        text = markers.blank_python(text, blanked_here[path], path)
        kernel = _kernel_of(text)
        if kernel and f"minivit/kernels/{kernel}.py" in removed:  # the op runs its own (the student's) math
            text = re.sub(r"^@accelerated\(kernel\.\w+\)\n", "", text, flags=re.M)
            text = re.sub(r"^from \.\.kernels import (accelerated|\w+ as kernel)\n", "", text, flags=re.M)
        out[path] = text
    return out


def write(files, out):
    """Write {path: text} under the folder out."""
    for path, text in files.items():
        target = Path(out) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _kernel_of(text):
    """The kernel module an op file imports as `kernel`, or None."""
    match = re.search(r"^from \.\.kernels import (\w+) as kernel$", text, re.M)
    return match and match.group(1)


def _kernels_to_remove(sources, blanked_here):
    """Kernel files standing in for a blanked function (a blanked op decorated @accelerated(kernel.f)),
    and every kernel that imports one of them."""
    removed = set()
    for path, functions in blanked_here.items():
        for node in ast.walk(ast.parse(sources[path])):
            if isinstance(node, ast.FunctionDef) and node.name in functions:
                if any("accelerated" in ast.unparse(d) for d in node.decorator_list):
                    removed.add(f"minivit/kernels/{_kernel_of(sources[path])}.py")
    while True:
        more = {path for path, text in sources.items() if path.startswith("minivit/kernels/") and path not in removed
                and any(re.search(rf"^from \.{Path(k).stem} import", text, re.M) for k in removed)}  # fmt: skip
        if not more:
            return removed
        removed |= more


def _notebook(src, dst, path, set_name, blanked, nbgrader=False):
    """The set's notebook: regions of blanked items cut (exercises shown), the rest kept, outputs cleared.
    nbgrader: the code regions of the set's own items stay, in cells marked as nbgrader's solution cells."""
    import nbformat  # only making a folder needs it, not grading one

    def hint(names):
        for name in names:
            if name in blanked:
                owner, item = blanked[name]
                return item.code.get(path, item.title) if owner == set_name else f"part of assignment {owner}"
        raise AssertionError(names)

    notebook = nbformat.read(src, as_version=4)
    not_yet = {name for name, (owner, _) in blanked.items() if later(owner, set_name)}
    own = {name for name, (owner, _) in blanked.items() if owner == set_name} if nbgrader else set()
    cells = []
    for i, cell in enumerate(notebook.cells):
        if {f"needs-{name}" for name in not_yet} & set(cell.metadata.get("tags", [])):
            continue  # runs code of a set not handed out yet
        had_text = bool(cell.source.strip())
        markers.blank_cell(cell, set(blanked), hint, f"{path}, cell {i}", set(blanked) - not_yet, keep=own)
        if markers.BEGIN in cell.source:
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "task": False,
                                         "grade_id": f"{Path(path).stem}-cell-{i}", "schema_version": 3}  # fmt: skip
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if cell.source.strip() or not had_text:  # a cell that was all solution goes
            cells.append(cell)
    notebook.cells = cells
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, dst)


def _grade_notebook(set_name, dst):
    """nbgrader's autograded tests for the set: one locked cell per part, worth its points, that grades the part
    as `grade` does in a student's folder (the answers spliced into the handout, its tests in a child process)."""
    import nbformat

    cells = [nbformat.v4.new_markdown_cell(
        f"# Assignment {set_name}: the grade\n\nEach cell below grades one part of your answers in `minivit/`, the way "
        "`python -m minivit.assignment grade` does: only the code between the `YOUR CODE` markers counts. Run it "
        "to check your work; an `AssertionError` says what is wrong.")]  # fmt: skip
    for item in SETS[set_name].items:
        for part in item.parts:
            cell = nbformat.v4.new_code_cell(
                f"from minivit.assignment.grade import check_part\n\ncheck_part({set_name!r}, {item.name!r}, {part.name!r})"
            )
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "task": False,
                                         "points": part.points, "grade_id": f"{item.name}-{part.name}",
                                         "schema_version": 3}  # fmt: skip
            cells.append(cell)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, dst)


def readme(set_name):
    """The student's README: setup, what to implement and for how many points, how to check and hand in."""
    s = SETS[set_name]
    total = sum(item.points for item in s.items)
    rows = "\n".join(
        f"| {item.title} | " + ", ".join(f"{p.name} {p.points}" if len(item.parts) > 1 else str(p.points)
                                         for p in item.parts)
        + " | " + ", ".join(f"`{r.replace('::', '` → `')}`" for r in item.code) + " |"
        for item in s.items
    )  # fmt: skip
    notebooks = "\n".join(f"- `{path}`" for path in s.notebooks)
    first = s.items[0].parts[0].tests[0]
    return f"""# Assignment {set_name} · {s.title}

This folder is minivit, the Vision Transformer in NumPy with every backward pass written by hand,
with some parts left for you to write. Each is a stub between `### YOUR CODE HERE` and
`### END YOUR CODE` that raises `NotImplementedError` with a one-line hint: replace the `raise` line
with your code, and keep both marker lines. Only the code between them is graded: changes anywhere
else (an import at the top of the file, an edited test) count for nothing, at home or at grading.

## Set up

    python -m venv .venv && . .venv/bin/activate
    pip install -e ".[test,notebooks]"

## What to implement ({total} points)

| item | points | where |
| --- | --- | --- |
{rows}

Start with the notebooks; each one runs until it reaches code you have not written yet, and the
exercises in it walk you through the derivations:

{notebooks}

Stubs that say "part of assignment A…, not this one" belong to a later assignment: leave them.

## Check your work

    python -m minivit.assignment grade           # your grade, part by part
    python -m pytest {first} -x   # one part's tests, with the details

`grade` takes your answers out of the marked regions, puts them into a fresh copy of the folder as it
was handed out, and runs each part's tests there, in its own process with a time limit. Most tests
are gradient checks: your backward against central differences in float64. A correct backward gives
relative errors around 1e-10; the tolerance is 1e-7; a mistake gives 1e-2 or more. Your grader runs
the same path, and also compares your outputs with the reference solution on new random inputs, to
1e-10: a derived backward passes both, a numerically computed one does not. There each part is graded
with the reference standing in for the other functions you write, so a mistake costs the parts that
use it (a model's backward is graded with your own forward of it, which keeps what the backward needs).

An answer may use NumPy, math and minivit's functions; the grader refuses, with a message, an answer
that imports anything else, opens files, uses the gradient check's helpers or complex numbers, or
runs the forward inside a backward.

## Hand in

    python -m minivit.assignment submit          # writes submission-{set_name}.zip: hand in that file

It checks your markers and lists the parts you have not answered yet.
"""
