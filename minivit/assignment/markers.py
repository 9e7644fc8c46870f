"""Solution regions: finding them in the source and the notebooks, and what a student gets instead.

The markers are nbgrader's, as comments, so the package runs the same with them in place (`python -m
minivit.assignment nbgrader` turns a set's notebooks into nbgrader source notebooks):

    def layernorm_backward(dout, cache):          in a notebook's code cell the marker names its item:
        xhat, rstd, gamma = cache                     ### BEGIN SOLUTION patches
        ### BEGIN SOLUTION                            ...
        # the derivation, then the code               ### END SOLUTION
        ...
        ### END SOLUTION                          in a markdown cell, HTML comments (they do not render):
                                                      <!-- BEGIN SOLUTION layernorm -->
                                                      the derivation
                                                      <!-- END SOLUTION -->
                                                      <!-- EXERCISE layernorm
                                                      the guided exercise a student sees instead
                                                      -->

A region in a .py file belongs to the function around it ("layernorm_backward", "Block.forward");
a student's copy has, in its place, a stub between `### YOUR CODE HERE` and `### END YOUR CODE` that
raises NotImplementedError with the item's one-line hint. A notebook region may name several items
(a summary of them all): it is blanked when any of them is; one named `instructor` never reaches a
student. A notebook cell tagged `needs-ITEM` (Jupyter's cell tags) runs code of that item: a folder
of an earlier set, where the item is not handed out yet, leaves the cell out.
"""

import ast
import re
from dataclasses import dataclass

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB_BEGIN, STUB_END = "### YOUR CODE HERE", "### END YOUR CODE"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION", "<!-- END SOLUTION -->"
MD_EXERCISE = re.compile(r"^<!-- EXERCISE ([\w ]+)\n(.*?)\n-->$", re.S | re.M)
INSTRUCTOR = "instructor"  # a notebook region for instructors only: cut from every student copy


@dataclass(frozen=True)
class Region:
    """Lines start..end (0-based, the two marker lines included) of a file or a notebook cell."""

    names: tuple  # the function ("Block.forward") in a .py file; the items its marker names in a notebook
    start: int
    end: int
    indent: str


def marked(lines, where, begin=BEGIN, end=END):
    """The regions between begin / end lines, with the names written after begin; a ValueError for
    unbalanced or nested markers."""
    regions, open_at = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith(begin):
            if open_at is not None:
                raise ValueError(f"{where}, line {i + 1}: {begin} inside the region opened at line {open_at + 1}")
            open_at, names = i, tuple(text[len(begin) :].removesuffix("-->").split())
        elif text == end:
            if open_at is None:
                raise ValueError(f"{where}, line {i + 1}: {end} without a {begin} before it")
            regions.append(Region(names, open_at, i, line[: len(line) - len(line.lstrip())]))
            open_at = None
    if open_at is not None:
        raise ValueError(f"{where}, line {open_at + 1}: {begin} is never closed by {end}")
    return regions


def python_regions(text, where="source", begin=BEGIN, end=END):
    """The marked regions of a Python file (or a student's stubs: begin/end = STUB_BEGIN/STUB_END),
    each named by the function or method around it."""
    found = marked(text.splitlines(), where, begin, end)
    functions = []  # (first line, last line, qualified name), 0-based

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not isinstance(child, ast.ClassDef):
                    functions.append((child.lineno - 1, child.end_lineno - 1, prefix + child.name))
                visit(child, prefix + child.name + ".")

    visit(ast.parse(text), "")
    regions = []
    for r in found:
        if r.names:
            raise ValueError(f"{where}, line {r.start + 1}: in a .py file a region belongs to its function; "
                             f"write a bare {begin}")  # fmt: skip
        around = [f for f in functions if f[0] < r.start <= f[1]]  # (the END may follow the last statement)
        if not around:
            raise ValueError(f"{where}, line {r.start + 1}: a solution region must sit inside a function")
        regions.append(Region((max(around)[2],), r.start, r.end, r.indent))  # the innermost function
    return regions


def stub(indent, hint):
    """The lines a student gets in place of a region: the hint, raised."""
    return [f"{indent}{STUB_BEGIN}", f"{indent}raise NotImplementedError({hint!r})", f"{indent}{STUB_END}"]


def solutions(text, where="source", begin=BEGIN, end=END):
    """{function: [the lines inside each of its regions]}, in order (a student's answers: begin, end =
    STUB_BEGIN, STUB_END)."""
    lines, found = text.splitlines(), {}
    for r in python_regions(text, where, begin, end):
        found.setdefault(r.names[0], []).append(lines[r.start + 1 : r.end])
    return found


def blank_python(text, hints, where="source"):
    """text with the regions of the functions in `hints` ({function: hint}) replaced by stubs and
    the other regions' markers removed (their solutions kept)."""
    lines, out, at = text.splitlines(), [], 0
    for r in python_regions(text, where):
        function = r.names[0]
        out += lines[at : r.start]
        out += stub(r.indent, hints[function]) if function in hints else lines[r.start + 1 : r.end]
        at = r.end + 1
    return "\n".join(out + lines[at:]) + "\n"


def fill_python(text, bodies, where="student source"):
    """A student's file with the stubs of the functions in `bodies` ({function: [lines of each region]},
    as `solutions` returns) filled in, between the stub's marker lines: what a student who found every
    answer hands back."""
    lines, out, at = text.splitlines(), [], 0
    used = dict.fromkeys(bodies, 0)
    for r in python_regions(text, where, STUB_BEGIN, STUB_END):
        function = r.names[0]
        out += lines[at : r.start]
        if function in bodies:
            out += [lines[r.start], *bodies[function][used[function]], lines[r.end]]
            used[function] += 1
        else:
            out += lines[r.start : r.end + 1]
        at = r.end + 1
    return "\n".join(out + lines[at:]) + "\n"


def cell_regions(cell, where):
    """The marked regions of one notebook cell; in a notebook every marker names its item(s)."""
    begin, end = (BEGIN, END) if cell.cell_type == "code" else (MD_BEGIN, MD_END)
    regions = marked(cell.source.splitlines(), where, begin, end)
    for r in regions:
        if not r.names:
            raise ValueError(f"{where}, line {r.start + 1}: a notebook's {begin} must name its item(s)")
    return regions


def exercises(cell):
    """[(names, text)] of the EXERCISE comments of a markdown cell."""
    return [(tuple(m.group(1).split()), m.group(2)) for m in MD_EXERCISE.finditer(cell.source)]


def blank_cell(cell, blanked, hint, where, shown=None, keep=frozenset()):
    """The cell as a student gets it: regions naming a blanked item cut (code: a stub raising hint(names));
    the exercises of the items in `shown` (default: the blanked ones) shown, the others dropped; every other
    region's markers removed. A code region of an item in `keep` stays, between bare BEGIN / END markers
    (nbgrader's, for its generate_assignment to cut)."""
    shown = blanked if shown is None else shown
    lines, out, at = cell.source.splitlines(), [], 0
    for r in cell_regions(cell, where):
        out += lines[at : r.start]
        if cell.cell_type == "code" and set(r.names) & keep:
            out += [r.indent + BEGIN, *lines[r.start + 1 : r.end], r.indent + END]
        elif set(r.names) & blanked or INSTRUCTOR in r.names:
            out += stub(r.indent, hint(r.names)) if cell.cell_type == "code" else []
        else:
            out += lines[r.start + 1 : r.end]
        at = r.end + 1
    source = "\n".join(out + lines[at:])
    if cell.cell_type == "markdown":
        source = MD_EXERCISE.sub(lambda m: m.group(2) if set(m.group(1).split()) & shown else "", source)
        source = re.sub(r"\n{3,}", "\n\n", source)  # where a cut region or exercise left a gap
    cell.source = source.strip("\n")
    return cell
