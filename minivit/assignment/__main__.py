"""python -m minivit.assignment list | make SET --out DIR | grade [SUBMISSION] | submit | gradescope SET --out ZIP |
nbgrader SET --course DIR"""

import argparse
import sys
import time
from pathlib import Path

from .sets import SETS


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minivit.assignment", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the sets, their items, parts and points")
    m = sub.add_parser("make", help="write a student folder for one set")
    m.add_argument("set", help=f"one of {', '.join(SETS)}")
    m.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    m.add_argument(
        "--keep-later",
        action="store_true",
        help="keep the later sets' solutions (default: blank them too, they are not handed out yet)",
    )
    m.add_argument("--blank-earlier", action="store_true", help="blank the earlier sets' solutions too (default: "
                   "they are in the folder, so that the student builds on working code); for courses that reuse "
                   "sets across years")  # fmt: skip
    g = sub.add_parser("grade", help="grade a submission: a student folder, a zip from `submit`, or a folder of many")
    g.add_argument("submission", nargs="?", default=".", help="a student folder or zip (default: here), or a folder "
                   "holding one subfolder or zip per student")  # fmt: skip
    g.add_argument("--set", help="the set to grade (default: the submission's own, from assignment.json or the zip's "
                   "manifest)")  # fmt: skip
    g.add_argument("--json", metavar="PATH", help="also write the results in Gradescope's format (results.json)")
    g.add_argument("--out", metavar="DIR", help="for a folder of many: where gradebook.csv and one JSON per student "
                   "go (default: grades/ beside it)")  # fmt: skip
    g.add_argument("--timeout", type=float, help="seconds each part may run (default 60 against the reference, "
                   "300 at home)")  # fmt: skip
    g.add_argument("--no-screen", action="store_true", help="run answers that use what an answer may not (imports "
                   "beyond numpy and minivit, files, numerical gradients; see screen.py) instead of refusing them")  # fmt: skip
    g.add_argument("--answers-only", action="store_true", help="what grade always does now: only the code between "
                   "the YOUR CODE markers is graded (kept so that older scripts run)")  # fmt: skip
    s = sub.add_parser("submit", help="pack the answers of a student folder into one zip to hand in")
    s.add_argument("folder", nargs="?", default=".", help="the student folder (default: here)")
    s.add_argument("--out", help="the zip to write (default: submission-SET.zip in the folder)")
    n = sub.add_parser("nbgrader", help="write one set as an nbgrader source assignment: COURSE/source/SET")
    n.add_argument("set", help=f"one of {', '.join(SETS)}")
    n.add_argument("--course", required=True, help="the nbgrader course folder (where nbgrader runs)")
    n.add_argument("--blank-earlier", action="store_true", help="blank the earlier sets' solutions too")
    b = sub.add_parser("gradescope", help="write Gradescope's autograder bundle for one set")
    b.add_argument("set", help=f"one of {', '.join(SETS)}")
    b.add_argument("--out", required=True, help="the zip to write, e.g. autograder.zip")
    b.add_argument("--timeout", type=float, default=60, help="seconds each part may run (default 60)")
    args = p.parse_args(argv)

    if args.command == "list":
        for s in SETS.values():
            print(f"{s.name} · {s.title}  ({sum(i.points for i in s.items)} points)")
            for item in s.items:
                print(f"    {item.points:3d}  {item.name:14} {item.title}")
                for part in item.parts if len(item.parts) > 1 else ():
                    print(f"      {part.points:3d}  {part.name}")
        return 0
    from . import grade as grading

    started = time.time()
    try:
        if args.command == "make":
            from .make import make

            out = make(args.set, args.out, keep_later=args.keep_later, blank_earlier=args.blank_earlier)
            print(f"wrote {out}: assignment {args.set}; grade it with `python -m minivit.assignment grade {out}`")
        elif args.command == "nbgrader":
            from .make import make

            out = make(args.set, Path(args.course) / "source" / args.set, blank_earlier=args.blank_earlier,
                       nbgrader=True)  # fmt: skip
            print(f"wrote {out}: in {args.course}, `nbgrader generate_assignment {args.set}` makes the release")
        elif args.command == "submit":
            from .submit import submit

            out, unanswered = submit(args.folder, args.out)
            print(f"wrote {out}: hand in this file")
            if unanswered:
                print(f"not answered yet (still raising NotImplementedError): {', '.join(unanswered)}")
        elif args.command == "gradescope":
            from .submit import gradescope_bundle

            out = gradescope_bundle(args.set, args.out, args.timeout)
            print(f"wrote {out}: upload it as the assignment's autograder (Gradescope: Configure Autograder, zip file)")
        elif Path(args.submission).is_dir() and not grading.is_one_submission(args.submission):
            if not args.set:
                raise ValueError("a folder of many submissions needs --set")
            out = Path(args.out or Path(args.submission).resolve().parent / "grades")
            rows = grading.grade_many(args.submission, args.set, out, args.timeout, log=lambda r: print(
                f"{r['student']}: {r['score']} of {r['max_score']}", flush=True), screen_answers=not args.no_screen)  # fmt: skip
            print(f"graded {len(rows)} submissions: {out / 'gradebook.csv'} and one JSON per student in {out}")
        else:
            results = grading.grade(args.submission, args.set, args.timeout, log=lambda t: print(
                f"graded {t['name']}: {t['score']} of {t['max_score']}", file=sys.stderr, flush=True),
                screen_answers=not args.no_screen)  # fmt: skip
            print(grading.table(results))
            if args.json:
                grading.write_json(results, args.json, started)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        if args.command == "grade" and args.json and args.set in SETS:  # the grader still gets its results file
            grading.write_json(grading.nothing(args.set, str(e)), args.json, started)
        return 2


if __name__ == "__main__":
    sys.exit(main())
