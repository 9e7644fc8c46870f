"""The child side of grading: `python -m minivit.assignment.worker CHECK SEED`, run in a throwaway copy.

It runs one check of checks.py on the copy's package (the student's answer in it) and writes what
came out to answer.npz (arrays only: the grader loads it with allow_pickle=False), or what went
wrong to error.json (of which the grader shows only what cannot carry an answer out: see grade.py).
Nothing here is trusted: the student's code runs in this process and may change any of it; the grader
only reads the two files, as data.
"""

import json
import sys
import traceback
from pathlib import Path

import numpy as np


def main(check, seed):
    import minivit
    from minivit import kernels
    from minivit.assignment import checks

    if Path(minivit.__file__).resolve().parents[1] != Path.cwd().resolve():
        raise ImportError(f"imported minivit from {minivit.__file__}, not from the copy being graded")
    kernels.set_enabled(False)
    found = getattr(checks, check)(int(seed))
    names = list(found)
    arrays = {f"a{i}": np.asarray(found[name]) for i, name in enumerate(names) if found[name] is not None}
    none = np.array([found[name] is None for name in names])
    np.savez("answer.npz", names=np.array(names, dtype=str), none=none, **arrays)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except BaseException as e:  # noqa: BLE001 - whatever it was, the grader should see its name
        where = (traceback.extract_tb(e.__traceback__) or [None])[-1]
        Path("error.json").write_text(json.dumps({
            "type": type(e).__name__, "message": str(e)[:600],
            "file": Path(where.filename).name if where else "", "line": where.lineno if where else 0}))  # fmt: skip
        sys.exit(1)
