"""`grade`: run a set's checks in a student folder and score them, item by item.

Each item runs its tests in a fresh `python -m pytest` process inside the folder (so the folder's
own minivit is the one imported), with a time limit: student code that hangs, prints or kills the
interpreter costs only that item. An item scores its points when every one of its tests passes and
at least one ran, else 0; a failure reports the assertion's message (the gradient checks name the
gradient and its relative error) or the exception.
"""

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from . import markers
from .sets import SETS


def set_of(folder):
    """The set a student folder was made for (its assignment.json)."""
    path = Path(folder) / "assignment.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a student folder (no assignment.json); pass --set")
    return json.loads(path.read_text())["set"]


def grade_item(folder, item, timeout=300):
    """{"name", "score", "max_score", "output"} of one item, from its tests run in `folder`."""
    result = {"name": f"{item.name}: {item.title}", "score": 0, "max_score": item.points}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                   f"--junitxml={report}", *item.tests, *(["-k", item.keyword] if item.keyword else [])]  # fmt: skip
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            run = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {**result, "output": f"timed out after {timeout} s"}
        if not report.is_file():
            last = (run.stdout + run.stderr).strip().splitlines()[-1:] or [""]
            return {**result, "output": f"the tests did not finish (exit code {run.returncode}): {last[0]}"}
        passed, failures = _outcomes(report)
    if failures:
        test, message = failures[0]
        more = f" (and {len(failures) - 1} more failing)" if len(failures) > 1 else ""
        return {**result, "output": f"{test}: {message}{more}"}
    if not passed:
        return {**result, "output": f"no test ran (exit code {run.returncode})"}
    return {**result, "score": item.points, "output": f"ok ({passed} tests passed)"}


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


def splice(submission, set_name, out):
    """A fresh folder of `set_name` (made from this checkout) holding only the submission's answers: the
    code between its `### YOUR CODE HERE` / `### END YOUR CODE` lines, function by function. Grading
    that, rather than the submission itself, makes edits anywhere else (to the tests, to gradcheck.py)
    count for nothing. returns out"""
    from .make import make  # the instructor's side: needs the project's source and nbformat

    make(set_name, out)
    files = {region.split("::")[0] for item in SETS[set_name].items for region in item.code if "::" in region}
    for path in sorted(files):
        theirs = Path(submission) / path
        answers = markers.solutions(theirs.read_text(), path, markers.STUB_BEGIN, markers.STUB_END) if theirs.is_file() else {}  # fmt: skip
        (out / path).write_text(markers.fill_python((out / path).read_text(), answers, path))
    return out


def grade(folder=".", set_name=None, timeout=300, log=None):
    """Grade every item of a set (default: the folder's own) in `folder`, handing each item's result to
    `log` as it finishes; returns {"set", "score", "max_score", "tests": [{"name", "score", "max_score",
    "output"}]}, the tests as Gradescope's autograder format has them."""
    set_name = set_name or set_of(folder)
    if set_name not in SETS:
        raise ValueError(f"unknown assignment set {set_name!r}; expected one of {list(SETS)}")
    tests = []
    for item in SETS[set_name].items:
        tests.append(grade_item(folder, item, timeout))
        if log:
            log(tests[-1])
    return {"score": sum(t["score"] for t in tests), "max_score": sum(t["max_score"] for t in tests),
            "set": set_name, "tests": tests}  # fmt: skip


def row(test):
    return f"{test['name'][:58]:58}  {test['score']:>6} {test['max_score']:>4}   {test['output']}"


def table(results):
    """The grade as a printed table: item, points earned, points possible, what happened; the total."""
    title = f"{results['set']} · {SETS[results['set']].title}"
    lines = [title, f"{'item':58}  {'points':>6} {'max':>4}   result"]
    lines += [row(t) for t in results["tests"]]
    lines.append(f"{'total':58}  {results['score']:>6} {results['max_score']:>4}")
    return "\n".join(lines)
