"""python -m minivit.assignment list | make SET --out DIR | grade [DIR] [--set SET] [--json PATH]"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .sets import SETS


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minivit.assignment", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the sets, their items and points")
    m = sub.add_parser("make", help="write a student folder for one set")
    m.add_argument("set", help=f"one of {', '.join(SETS)}")
    m.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    m.add_argument(
        "--keep-later",
        action="store_true",
        help="keep the later sets' solutions (default: blank them too, they are not handed out yet)",
    )
    g = sub.add_parser("grade", help="run a set's checks in a student folder and print the grade table")
    g.add_argument("folder", nargs="?", default=".", help="the student folder (default: here)")
    g.add_argument("--set", help="the set to grade (default: the folder's own, from its assignment.json)")
    g.add_argument("--json", metavar="PATH", help="also write the results in Gradescope's autograder format")
    g.add_argument("--timeout", type=float, default=300, help="seconds each item may run (default 300)")
    g.add_argument(
        "--answers-only",
        action="store_true",
        help="grade only the code between the YOUR CODE markers, put into a fresh copy of the set made from "
        "this checkout: edits elsewhere in a submission (its tests, gradcheck.py) count for nothing",
    )
    args = p.parse_args(argv)

    if args.command == "list":
        for s in SETS.values():
            print(f"{s.name} · {s.title}  ({sum(i.points for i in s.items)} points)")
            for item in s.items:
                print(f"    {item.points:3d}  {item.name:14} {item.title}")
        return 0
    try:
        if args.command == "make":
            from .make import make  # nbformat: only the instructor's side needs it

            out = make(args.set, args.out, keep_later=args.keep_later)
            print(f"wrote {out}: assignment {args.set}; grade it with `python -m minivit.assignment grade {out}`")
            return 0
        from .grade import grade, set_of, splice, table

        folder = args.folder
        with tempfile.TemporaryDirectory() as tmp:
            if args.answers_only:
                folder = splice(args.folder, args.set or set_of(args.folder), Path(tmp) / "graded")
            results = grade(folder, args.set, args.timeout, log=lambda test: print(
                f"graded {test['name'].split(':')[0]}: {test['score']} of {test['max_score']}", file=sys.stderr,
                flush=True))  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(results))
    if args.json:
        gradescope = {"score": results["score"], "output": f"{results['set']}: {results['score']} of "
                      f"{results['max_score']} points", "tests": results["tests"]}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(gradescope, f, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
