"""The child side of grading: `python -m minivit.assignment.worker CHECK SEED`, run in a throwaway copy.

It runs one check of checks.py on the copy's package (the student's answer in it) and writes what
came out to answer.npz (arrays only: the grader loads it with allow_pickle=False), or what went
wrong to error.txt. Nothing here is trusted: the student's code runs in this process and may change
any of it; the grader only reads the two files, as data.
"""

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
        where = traceback.extract_tb(e.__traceback__)[-1:]
        line = f" ({Path(where[0].filename).name}, line {where[0].lineno})" if where else ""
        Path("error.txt").write_text(f"{type(e).__name__}: {e}{line}"[:600])
        sys.exit(1)
