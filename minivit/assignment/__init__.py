"""Course assignments from minivit: an instructor makes a student version with one command, and a grade that
the graded code cannot change.

    python -m minivit.assignment list                     # the sets, their items, parts and points
    python -m minivit.assignment make A2 --out hw2        # a student folder: the set's code blanked
    python -m minivit.assignment grade hw2                # the grade (a folder, a zip, loose files, or many)
    python -m minivit.assignment submit                   # in the student's folder: the answers in one zip
    python -m minivit.assignment gradescope A2 --out autograder.zip
    python -m minivit.assignment nbgrader A2 --course COURSE   # an nbgrader source assignment

markers.py finds the solution regions (`### BEGIN SOLUTION` / `### END SOLUTION` comments) and writes
the student's stubs; sets.py says what each set blanks, its parts and their points; make.py writes a
student folder; grade.py takes the answers out of a submission and scores each part, running it in a
child process (sandbox.py, worker.py) on the checks of checks.py after screen.py has read it;
submit.py packs a submission and Gradescope's bundle.
"""

from .sets import SETS, AssignmentSet, Item

__all__ = ["SETS", "AssignmentSet", "Item"]
