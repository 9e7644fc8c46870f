"""`grade`: score a submission part by part, with code the submission cannot reach.

One path, for the instructor and for a student at home:

1. The answers. Only the code between each `### YOUR CODE HERE` / `### END YOUR CODE` pair of the
   submission (a student folder, a zip `submit` wrote, or the files on their own) is used; nothing
   else in it is run. A file that cannot be read (missing, markers deleted or doubled, a syntax
   error) costs the items with regions in it their points, with a message, and nothing else.
2. The template the answers go into. Where this tool holds the reference solution (an instructor's
   checkout, a Gradescope bundle) that is the package itself, and each item is graded with the
   reference standing in for every other blanked function, so a wrong softmax_backward never costs
   attention_core_backward its points. In a student's folder it is the handout `make` packed
   (.assignment/handout.zip), with the student's own answers in every region.
3. Each part runs in a child process on a fresh copy of that template with the answers spliced in
   (sandbox.py: limits on time and memory, and every process it started killed when it ends). With
   the reference, the child runs the part's check (checks.py) on inputs drawn from a seed chosen
   here and now, and sends back arrays; this process compares them with the reference's outputs,
   computed before any student code ran, in float64 at checks.TOLERANCE, a bound a correct
   derivation meets by six orders of magnitude and a central-difference gradient does not. Without
   the reference (at home) the child runs the part's tests instead: the gradient checks, which need
   none. A correct answer passes both; a numerical gradient passes only the second.

What the child can still do (it runs as the grader's user) is in sandbox.py and the README.
"""

import builtins
import csv
import functools
import io
import json
import re
import secrets
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..gradcheck import relative_error
from . import checks, markers, sandbox, screen
from .make import HANDOUT, REPO, TOOL, hints, package, read_sources, write
from .sets import SETS

MAX_FILE = 2 << 20  # bytes read of one submitted file
ANSWER_BYTES = 64 << 20  # bytes of the child's answer.npz
ANSWER_ARRAYS = 256 << 20  # bytes its arrays may take once unpacked
MAX_ZIP = 64 << 20  # bytes unpacked from one submitted zip
MANIFEST = "manifest.json"


def set_of(folder):
    """The set a submission was made for: its assignment.json (a student folder) or manifest.json (a zip)."""
    for name in ("assignment.json", MANIFEST):
        path = Path(folder) / name
        if path.is_file():
            with open(path, "rb") as f:
                try:
                    found = json.loads(f.read(MAX_FILE)).get("set")
                except (ValueError, AttributeError):
                    found = None
            if isinstance(found, str) and found in SETS:
                return found
            raise ValueError(f"{path} does not name a known assignment set ({list(SETS)}); pass --set")
    raise FileNotFoundError(f"{folder} is not a student folder (no assignment.json or {MANIFEST}); pass --set")


# -- 1. the answers ---------------------------------------------------------------------------------


def answer_files(set_name):
    """The files that hold the set's answer regions (the student's .py files), in order."""
    return sorted({region.split("::")[0] for item in SETS[set_name].items for region in item.code if "::" in region})


def _find(root, path):
    """The submitted file for `path`: at its place in the folder; else, in a submission without that layout
    (the files on their own, or the folder one level down), the file nearest the top whose path ends the same,
    or else of that name."""
    if (root / path).is_file():
        return root / path
    if (root / "minivit").is_dir():
        return None
    found = [p for p in root.rglob(Path(path).name)
             if p.is_file() and not p.is_symlink() and ".assignment" not in p.parts]  # fmt: skip
    for candidates in ([p for p in found if p.as_posix().endswith("/" + path)], found):
        nearest = [p for p in candidates if len(p.parts) == min(len(q.parts) for q in candidates)]
        if len(nearest) == 1:  # the one nearest the top (a build/ copy lies deeper)
            return nearest[0]
    return None


def read_answers(root, paths):
    """{path: {function: [the lines of each answer region]}, or a message saying why it cannot be read}, for
    each of the files `paths` of a submission."""
    answers = {}
    for path in paths:
        found = _find(Path(root), path)
        if found is None:
            answers[path] = f"{path} is missing from the submission"
            continue
        try:
            with open(found, "rb") as f:
                text = f.read(MAX_FILE).decode("utf-8")
            answers[path] = markers.solutions(text, path, markers.STUB_BEGIN, markers.STUB_END)
        except SyntaxError as e:
            answers[path] = f"{path}, line {e.lineno}: syntax error ({e.msg})"
        except (RecursionError, MemoryError):
            answers[path] = f"{path} is nested too deeply to read"
        except (ValueError, UnicodeDecodeError) as e:
            answers[path] = str(e) if isinstance(e, ValueError) else f"{path} is not UTF-8 text"
    return answers


# -- 2. the template ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    sources: dict  # {path: text}: the package (and, for a handout, its tests and pyproject.toml)
    reference: bool  # whether it holds the solutions of the set being graded

    @property
    def answered(self):
        """The files of a handout with answer regions: the set's, and an earlier set's made with --blank-earlier."""
        return sorted(path for path, text in self.sources.items() if path.endswith(".py") and markers.STUB_BEGIN in text
                      and not path.startswith(TOOL))  # fmt: skip


def template(set_name, root=REPO):
    """The reference (this checkout, when it holds the set's solution regions) or the handout of the
    student folder this tool lives in."""
    own = read_sources(root)
    code = {path: text for path, text in own.items() if not path.startswith(TOOL) and path.endswith(".py")}
    regions = {f"{path}::{r.names[0]}" for path, text in code.items() for r in markers.python_regions(text, path)}
    if all(region in regions for item in SETS[set_name].items for region in item.code if "::" in region):
        return Template(own, True)
    handout = Path(root) / HANDOUT
    if not handout.is_file():
        raise FileNotFoundError(f"neither the solutions of {set_name} nor {HANDOUT} are in {root}: grade from the "
                                f"instructor's checkout, or from a student folder that `make` wrote")  # fmt: skip
    with zipfile.ZipFile(handout) as z:
        return Template({name: z.read(name).decode() for name in z.namelist()}, False)


def splice(tpl, item, part, set_name, answers):
    """{path: text} of the copy one part is graded on: the template with the answers in its stubs, or a
    ValueError naming what does not fit. With the reference, only the answers this part grades go in (the
    reference stands in for the rest); in a handout every answer of the set does."""
    regions = item.regions(part)
    if tpl.reference:
        files = package(tpl.sources, {region: item.code[region] for region in regions})
        paths = {region.split("::")[0] for region in regions}
    else:
        files, paths = dict(tpl.sources), set(answers)
    own = {region.split("::")[0] for region in regions}
    for path in sorted(paths):
        if isinstance(answers[path], str):
            if path in own:
                raise ValueError(answers[path])
            continue  # another item's unreadable file: its stubs stay
        stubs = Counter(
            r.names[0] for r in markers.python_regions(files[path], path, markers.STUB_BEGIN, markers.STUB_END)
        )
        bodies = {function: answers[path].get(function, []) for function in stubs}
        for function, count in stubs.items():
            if len(bodies[function]) != count and path in own:
                raise ValueError(f"{path}: {function} has {len(bodies[function])} answer regions (### YOUR CODE HERE "
                                 f"... ### END YOUR CODE), the handout has {count}")  # fmt: skip
        files[path] = markers.fill_python(files[path], {f: b for f, b in bodies.items() if len(b) == stubs[f]}, path)
    return files


# -- 3. running and scoring a part --------------------------------------------------------------------


def expected_outputs(set_name):
    """{(item, part): (seed, the reference's outputs)} for every part of the set, drawn now: run before any
    student code, in this process, with the CPU kernels off (the plain ops)."""
    from .. import kernels

    was = kernels.enabled()
    kernels.set_enabled(False)
    try:
        found = {}
        for item in SETS[set_name].items:
            for part in item.parts:
                seed = secrets.randbits(31)
                found[item.name, part.name] = seed, getattr(checks, part.check)(seed)
        return found
    finally:
        kernels.set_enabled(was)


def compare(expected, got, tolerance):
    """None when every expected output is there with its shape and within tolerance, else what is wrong
    (the first wrong output's name, never its value)."""
    for name, want in expected.items():
        if name not in got:
            return f"{name} missing"
        have = got[name]
        if want is None or have is None:
            if want is not None or have is not None:
                return f"{name} is None, expected an array {want.shape}" if have is None else f"{name} should be None"
            continue
        want = np.asarray(want)
        if have.shape != want.shape:
            return f"{name} has shape {have.shape}, expected {want.shape}"
        if have.dtype.kind not in "biuf":
            return f"{name} has dtype {have.dtype}, expected real numbers"
        error = relative_error(have, want)
        if not error <= tolerance:
            return f"{name}: relative error {error:.1e}"
    return None


def _answer(folder, hints):
    """The child's outputs {name: array or None}; or what went wrong, in words the child cannot fill with
    the reference (it can read the grader's files): a built-in exception's name and the line it came from,
    and the message only where it is the stub's own hint; or None when the child left nothing."""
    raw = sandbox.read_file(folder / "error.json", 1 << 16)
    if raw is not None:
        return _error(raw, hints)
    raw = sandbox.read_file(folder / "answer.npz", ANSWER_BYTES)
    if raw is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:  # a small file can unpack to gigabytes
            if sum(info.file_size for info in z.infolist()) > ANSWER_ARRAYS:
                return f"its outputs take more than {ANSWER_ARRAYS >> 20} MiB"
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            names, none = [str(n) for n in z["names"]], [bool(b) for b in z["none"]]
            return {name: None if none[i] else z[f"a{i}"] for i, name in enumerate(names)}
    except Exception as e:  # noqa: BLE001 - whatever the child wrote there, it is not a valid answer
        return f"its outputs could not be read ({type(e).__name__})"


@functools.cache
def stub_hints():
    """Every hint a stub of any set may raise: the only exception messages shown from a child."""
    return frozenset(
        hint for name in SETS for earlier in (False, True) for hint in hints(name, blank_earlier=earlier).values()
    )


def _error(raw, hints):
    try:
        found = json.loads(raw)
        kind, message, file, line = str(found["type"]), str(found["message"]), str(found["file"]), int(found["line"])
    except (ValueError, KeyError, TypeError):
        return "failed"
    builtin = getattr(builtins, kind, None)
    if not (isinstance(builtin, type) and issubclass(builtin, BaseException)):
        kind = "an exception of its own class"
    where = f" ({file}, line {line})" if re.fullmatch(r"\w{1,60}\.py", file) else ""
    if kind == "NotImplementedError" and message in hints:
        return f"{kind}: {message}{where}"
    return f"{kind}{where} (`python -m minivit.assignment grade` in your folder shows the details)"


def screened(item, part, answers):
    """The first thing an answer this part grades may not use (screen.py), as a message; or None."""
    for region in item.regions(part):
        path, function = region.split("::")
        for body in answers[path].get(function, []) if isinstance(answers[path], dict) else []:
            found = screen.problem(body, function)
            if found:
                return f"{function}: {found}"
    return None


def _run_part(tpl, item, part, set_name, answers, expected, folder, timeout, screen_answers=True):
    """(points, what happened) for one part."""
    refused = screened(item, part, answers) if screen_answers else None
    if refused:
        return 0, refused
    try:
        write(splice(tpl, item, part, set_name, answers), folder)
    except ValueError as e:
        return 0, str(e)
    if tpl.reference:
        seed, want = expected[item.name, part.name]
        run = sandbox.run([sys.executable, "-m", "minivit.assignment.worker", part.check, str(seed)], folder, timeout)
        got = _answer(folder, stub_hints())
        if run.timed_out:
            return 0, f"timed out after {timeout:g} s"
        if isinstance(got, str):
            return 0, got
        if got is None:  # what it printed stays unshown: it could be the reference
            return 0, f"the check did not finish (exit code {run.returncode})"
        wrong = compare(want, got, checks.TOLERANCE)
        return (0, wrong) if wrong else (part.points, "ok")
    report = folder / ".report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={report}",
               *part.tests, *(["-k", part.keyword] if part.keyword else [])]  # fmt: skip
    run = sandbox.run(command, folder, timeout)
    if run.timed_out:
        return 0, f"timed out after {timeout:g} s"
    if not report.is_file():
        return 0, f"the tests did not finish (exit code {run.returncode}): {_last_line(run.output)}"
    passed, failures = _outcomes(report)
    if failures:
        test, message = failures[0]
        more = f" (and {len(failures) - 1} more failing)" if len(failures) > 1 else ""
        return 0, f"{test}: {message}{more}"
    if not passed:
        return 0, f"no test ran (exit code {run.returncode})"
    return part.points, f"ok ({passed} tests passed)"


def _last_line(output):
    return (output.strip().splitlines() or [""])[-1][:300]


def _outcomes(report):
    """(tests passed, [(test, first line of its failure)]) from a pytest JUnit XML report."""
    passed, failures = 0, []
    for case in ET.parse(report).iter("testcase"):
        bad = case.find("failure")
        bad = bad if bad is not None else case.find("error")
        if bad is not None:
            message = (bad.get("message") or bad.text or "failed").strip().splitlines()[0]
            failures.append((case.get("name"), message.removeprefix("AssertionError: ")))
        elif case.find("skipped") is None:
            passed += 1
    return passed, failures


# -- 4. the submission: a folder, a zip, or a folder of many --------------------------------------------


def unpack(archive, out):
    """Extract a submitted zip into out, as plain files only: no path outside out, at most MAX_ZIP bytes."""
    total = 0
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            parts = Path(info.filename.replace("\\", "/")).parts
            if info.is_dir() or not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
                continue
            total += info.file_size
            if total > MAX_ZIP:
                raise ValueError(f"{archive} unpacks to more than {MAX_ZIP >> 20} MiB")
            target = Path(out, *parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src:
                    target.write_bytes(src.read(MAX_ZIP))
            except OSError:  # a name too long, a file where a folder should be: that entry is not read
                continue
    return Path(out)


def is_one_submission(folder):
    """A folder of one submission (a student folder, an unpacked zip, loose .py files) rather than a folder of
    many (one subfolder or zip per student)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in ("assignment.json", MANIFEST, "minivit")) or any(
        folder.glob("*.py")
    )


def grade(submission=".", set_name=None, timeout=None, log=None, screen_answers=True, only=None, tpl=None):
    """Grade one submission (a folder or a zip), part by part, handing each part's result to `log` as it finishes.
    timeout: seconds each part may run (default: 60 against the reference; 300 at home, where the gradient
    checks take longer). screen_answers: refuse answers that use what an answer may not (screen.py) before
    running them. only: (item, part) names: grade that part alone. tpl: the template (default: read now).

    returns {"set", "score", "max_score", "reference" (whether the reference solution decided it),
    "tests": [{"name", "score", "max_score", "output"}]}, one test per part."""
    with tempfile.TemporaryDirectory(prefix="minivit-grade-") as tmp:
        root = Path(submission)
        if root.is_file():
            try:
                root = unpack(root, Path(tmp) / "submission")
            except zipfile.BadZipFile:
                raise ValueError(f"{submission} is neither a folder nor a zip file") from None
        elif not root.is_dir():
            raise FileNotFoundError(f"{submission} does not exist")
        set_name = set_name or set_of(root)
        if set_name not in SETS:
            raise ValueError(f"unknown assignment set {set_name!r}; expected one of {list(SETS)}")
        tpl = tpl or template(set_name)
        timeout = timeout or (60 if tpl.reference else 300)
        expected = expected_outputs(set_name) if tpl.reference else {}
        answers = read_answers(root, answer_files(set_name) if tpl.reference else tpl.answered)
        tests = []
        with sandbox.reaping():
            for item in SETS[set_name].items:
                for part in item.parts:
                    if only and only != (item.name, part.name):
                        continue
                    folder = Path(tempfile.mkdtemp(prefix=f"{item.name}-{part.name}-", dir=tmp))
                    score, output = _run_part(
                        tpl, item, part, set_name, answers, expected, folder, timeout, screen_answers
                    )
                    tests.append({"name": f"{item.name}: {part.name}", "score": score, "max_score": part.points,
                                  "output": output})  # fmt: skip
                    if log:
                        log(tests[-1])
    return {"set": set_name, "score": sum(t["score"] for t in tests), "max_score": sum(t["max_score"] for t in tests),
            "reference": tpl.reference, "tests": tests}  # fmt: skip


def check_part(set_name, item, part, folder=".", timeout=None):
    """Grade one part of the submission in `folder`, raising AssertionError with what is wrong unless it gets
    every point (nbgrader's autograded cells call this)."""
    parts = {(i.name, p.name) for i in SETS[set_name].items for p in i.parts} if set_name in SETS else set()
    if (item, part) not in parts:
        raise ValueError(f"no part {item}: {part} in assignment {set_name!r}")
    (test,) = grade(folder, set_name, timeout, only=(item, part))["tests"]
    assert test["score"] == test["max_score"], test["output"]
    print(f"{test['name']}: {test['output']}")


def grade_many(folder, set_name, out, timeout=None, log=None, screen_answers=True):
    """Grade every submission in `folder` (one subfolder or zip per student, named after them): one JSON per
    student and gradebook.csv (student, score, max_score, a column per part) in `out`; returns the rows.
    The template is read once, before any student's code runs, so no submission can change another's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in Path(folder).iterdir() if p.is_dir() or p.suffix == ".zip")
    if not entries:
        raise ValueError(f"{folder} holds no submission (a subfolder or zip per student)")
    parts = [f"{item.name}: {part.name}" for item in SETS[set_name].items for part in item.parts]
    tpl, rows = template(set_name), []
    for entry in entries:
        student = entry.stem if entry.suffix == ".zip" else entry.name
        try:
            results = grade(entry, set_name, timeout, screen_answers=screen_answers, tpl=tpl)
        except (ValueError, FileNotFoundError) as e:  # an unreadable submission scores 0, the others go on
            results = nothing(set_name, str(e))
        except Exception as e:  # noqa: BLE001 - the same for what the grader did not foresee, named
            results = nothing(set_name, f"the grader could not read this submission ({type(e).__name__})")
        _write(out / f"{student}.json", json.dumps(gradescope(results), indent=2, ensure_ascii=False))
        scores = {t["name"]: t["score"] for t in results["tests"]}
        rows.append({"student": student, "score": results["score"], "max_score": results["max_score"],
                     **{p: scores.get(p, 0) for p in parts}})  # fmt: skip
        if log:
            log(rows[-1])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["student", "score", "max_score", *parts])
    writer.writeheader()
    writer.writerows(rows)
    _write(out / "gradebook.csv", text.getvalue())
    return rows


# -- the results ------------------------------------------------------------------------------------------


def nothing(set_name, why):
    """The results of a submission that could not be graded at all: every part 0, with the reason."""
    tests = [{"name": f"{item.name}: {part.name}", "score": 0, "max_score": part.points, "output": why}
             for item in SETS[set_name].items for part in item.parts]  # fmt: skip
    return {"set": set_name, "score": 0, "max_score": sum(t["max_score"] for t in tests), "reference": True,
            "tests": tests}  # fmt: skip


def gradescope(results, execution_time=None):
    """The results in Gradescope's autograder format (results.json)."""
    found = {"score": results["score"], "output": f"{results['set']}: {results['score']} of {results['max_score']} "
             "points", "visibility": "visible", "tests": [
                 {**t, "status": "passed" if t["score"] == t["max_score"] else "failed", "visibility": "visible"}
                 for t in results["tests"]]}  # fmt: skip
    if execution_time is not None:
        found["execution_time"] = round(execution_time)
    return found


def write_json(results, path, started):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps(gradescope(results, time.time() - started), indent=2, ensure_ascii=False))


def _write(path, text):
    with atomic_file(path) as f:  # a grade file is whole or absent, never half-written
        f.write(text.encode())


def row(test):
    return f"{test['name'][:40]:40}  {test['score']:>6} {test['max_score']:>4}   {test['output']}"


def table(results):
    """The grade as a printed table: part, points earned, points possible, what happened; the total."""
    how = ("compared with the reference solution" if results["reference"] else
           "checked by the gradient checks here; your grader also compares with the reference solution")  # fmt: skip
    lines = [
        f"{results['set']} · {SETS[results['set']].title}  ({how})",
        f"{'part':40}  {'points':>6} {'max':>4}   result",
    ]
    lines += [row(t) for t in results["tests"]]
    lines.append(f"{'total':40}  {results['score']:>6} {results['max_score']:>4}")
    return "\n".join(lines)
