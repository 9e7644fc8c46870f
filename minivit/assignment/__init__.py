"""Course assignments from minivit: an instructor makes a student version with one command, and the
gradient checks grade it.

    python -m minivit.assignment list                     # the sets, their items and points
    python -m minivit.assignment make A2 --out hw2        # a student folder: the set's code blanked
    python -m minivit.assignment grade hw2                # the grade table (run in or on a folder)
    python -m minivit.assignment grade hw2 --json results.json   # Gradescope's autograder format

markers.py finds the solution regions (nbgrader's `### BEGIN SOLUTION` / `### END SOLUTION`, as
comments) and writes the student's stubs; sets.py says what each set blanks, which tests grade it
and for how many points; make.py writes a student folder; grade.py runs and scores the checks.
"""

from .sets import SETS, AssignmentSet, Item

__all__ = ["SETS", "AssignmentSet", "Item"]
