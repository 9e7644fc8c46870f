"""What an answer may not use, read from its source before it runs (the first of the grader's two fences).

An answer is a few lines of array math. It needs NumPy, math and minivit's own functions; it never
needs to reach the interpreter, the file system or other processes, to differentiate numerically
(the gradient check's helpers, complex steps, re-running the forward inside a backward), or to look
behind objects (dunder attributes, getattr). `problem(lines, function)` names the first such use in
an answer region, so that the part scores 0 with that message and the answer never runs.

A determined student can write around any list like this one; the second fence is that the grade is
decided outside the student's process (grade.py, sandbox.py). This one turns the easy ways into a
clear message instead of a puzzle for the instructor.
"""

import ast
import textwrap

ALLOWED_IMPORTS = ("numpy", "math", "minivit", "scipy.special")
COMPLEX = "complex numbers (a complex step is numerical differentiation)"
NOT_IMPORTED = ("minivit.assignment", "minivit.gradcheck", "numpy.ctypeslib", "numpy.lib.npyio")
NOT_IN_AN_ANSWER = {
    "gradcheck": "the gradient check's helpers",
    "numerical_gradient": "numerical differentiation",
    "relative_error": "the gradient check's helpers",
    "emath": COMPLEX,
    "__import__": "importing", "importlib": "importing", "exec": "running code from text",
    "eval": "running code from text", "compile": "running code from text", "open": "files", "os": "the system",
    "sys": "the interpreter", "subprocess": "processes", "ctypes": "C calls", "ctypeslib": "C calls",
    "signal": "signals", "globals": "the module's globals", "locals": "frames", "vars": "the module's globals",
    "getattr": "looking up attributes by name", "setattr": "changing attributes by name",
    "delattr": "changing attributes by name", "breakpoint": "the debugger", "input": "reading input",
    "builtins": "the interpreter", "save": "files", "savez": "files", "savetxt": "files", "tofile": "files",
    "memmap": "files", "load": "files", "loadtxt": "files", "fromfile": "files", "fromregex": "files",
    "genfromtxt": "files", "DataSource": "files", "Path": "files", "pathlib": "files", "shutil": "files",
    "tempfile": "files", "io": "files",
}  # fmt: skip


def problem(lines, function):
    """None if the answer region `lines` (of `function`, e.g. "layernorm_backward") uses nothing an answer
    may not, else a message naming the first thing it uses. A name the answer binds itself (a variable
    called `input`, a helper called `x_forward`) is its own, and allowed."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(lines)))
    except SyntaxError:
        return None  # the copy will not import: the child reports the syntax error with its line
    except (RecursionError, MemoryError):
        return "is nested too deeply to read"
    backward = function.split(".")[-1].endswith("backward")
    own = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
    own |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                relative = isinstance(node, ast.ImportFrom) and node.level > 0
                special = module == "scipy" and all(a.name == "special" for a in node.names)
                if (not relative and not module.startswith(ALLOWED_IMPORTS) and not special
                        or module.startswith(NOT_IMPORTED) or "gradcheck" in module or "assignment" in module):  # fmt: skip
                    return f"imports {module or '.'}: an answer needs only numpy, math and minivit's functions"
            for alias in node.names:
                if alias.name in NOT_IN_AN_ANSWER or "complex" in alias.name.lower():
                    return f"uses {alias.name} ({NOT_IN_AN_ANSWER.get(alias.name, COMPLEX)}), which an answer may not"
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name.startswith("__"):
            return f"defines {node.name}: an answer does not look behind objects"
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name is not None and not (isinstance(node, ast.Name) and name in own):
            if name in NOT_IN_AN_ANSWER:
                return f"uses {name} ({NOT_IN_AN_ANSWER[name]}), which an answer may not"
            if "complex" in name.lower():
                return f"uses {name}: {COMPLEX}"
            if name.startswith("__") and name.endswith("__"):
                return f"uses {name}: an answer does not look behind objects"
            if backward and (name.endswith("_forward") or name == "forward"):
                return f"calls {name}: a backward pass derived by hand does not run the forward again"
        if isinstance(node, ast.Constant) and isinstance(node.value, complex):
            return f"uses the complex number {node.value!r} (a complex step is numerical differentiation)"
    return None
