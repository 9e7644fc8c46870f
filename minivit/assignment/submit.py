"""Getting answers to the grader: `submit` (the student's zip) and `gradescope` (the instructor's autograder).

    python -m minivit.assignment submit                     # in the student folder: submission-A2.zip
    python -m minivit.assignment gradescope A2 --out autograder.zip

A submission zip holds the files with answer regions, as they are, and manifest.json (the set, each
file's SHA-256, the regions still unanswered); `grade` reads only the regions of it. The Gradescope
bundle holds this package with its solutions, setup.sh (installs the dependencies) and run_autograder
(grades /autograder/submission into /autograder/results/results.json).
"""

import hashlib
import json
import re
import zipfile
from pathlib import Path

from ..atomic import atomic_file
from .grade import MANIFEST, answer_files, read_answers, set_of, template
from .make import REPO, read_sources

STUB = re.compile(r"^\s*raise NotImplementedError\(.*\)\s*$")


def _atomic_zip(path, files, executable=()):
    """Write {name: text} as a zip at path (the names in `executable` with mode 755), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, suffix=".zip") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if name in executable else 0o100644) << 16
            z.writestr(info, text, zipfile.ZIP_DEFLATED)
    return path


def submit(folder=".", out=None):
    """Pack the answers of a student folder into one zip; returns (its path, [functions not answered yet]).
    A file whose markers cannot be read is an error naming the file and line, and nothing is written."""
    folder = Path(folder)
    set_name = set_of(folder)
    answers = read_answers(folder, answer_files(set_name))
    broken = [message for message in answers.values() if isinstance(message, str)]
    if broken:
        raise ValueError("cannot submit: " + "; ".join(broken))
    unanswered = [f"{path}::{function}" for path, found in answers.items() for function, bodies in found.items()
                  if any(all(STUB.match(line) or not line.strip() for line in body) for body in bodies)]  # fmt: skip
    files = {path: (folder / path).read_text() for path in answer_files(set_name)}
    manifest = {"set": set_name, "files": {path: hashlib.sha256(text.encode()).hexdigest() for path, text in
                                           files.items()}, "unanswered": unanswered}  # fmt: skip
    out = Path(out) if out else folder / f"submission-{set_name}.zip"
    return _atomic_zip(out, {MANIFEST: json.dumps(manifest, indent=2) + "\n", **files}), unanswered


SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image: minivit's dependencies.
set -euo pipefail
python3 -m pip install {requirements}
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission: the answers in /autograder/submission, graded against the
# reference solution in /autograder/source, the results in /autograder/results/results.json.
set -uo pipefail
AUTOGRADER="${{AUTOGRADER:-/autograder}}"
cd "$AUTOGRADER/source"
"${{PYTHON:-python3}}" -m minivit.assignment grade "$AUTOGRADER/submission" --set {set_name} \\
    --json "$AUTOGRADER/results/results.json" --timeout {timeout:g}
"""


def dependencies(root=REPO):
    """The package's dependencies, as pyproject.toml lists them."""
    text = (Path(root) / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def gradescope_bundle(set_name, out, timeout=60, root=REPO):
    """Write Gradescope's autograder zip for one set; returns its path. It needs this checkout's solutions."""
    if not template(set_name, root).reference:
        raise ValueError(f"{root} does not hold the solutions of {set_name}: make the bundle from the instructor's "
                         "checkout")  # fmt: skip
    files = dict(read_sources(root))
    files["setup.sh"] = SETUP.format(requirements=" ".join(f"'{d}'" for d in dependencies(root)))
    files["run_autograder"] = RUN.format(set_name=set_name, timeout=timeout)
    return _atomic_zip(out, files, executable=("setup.sh", "run_autograder"))
