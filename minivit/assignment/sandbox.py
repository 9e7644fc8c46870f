"""Running code the grader does not trust: a child process with limits, and nothing of it left afterwards.

    with sandbox.reaping():                 # the grader adopts whatever its children leave behind
        run = sandbox.run(argv, folder, timeout=60)

The child runs in its own session (so its process group can be killed as one), in the folder given,
with a small environment (HOME and TMPDIR inside that folder), limits on memory, file size and core
dumps, and a wall-clock limit. When it exits or runs out of time, every process it started is killed:
its process group, and on Linux also anything that left the group (a double fork, setsid), since
`reaping` makes the grader the "child subreaper" that such orphans are handed to.

This is a fence against accidents and casual tampering, not a security boundary: the child runs as
the grader's user and can read what that user can (the reference solution included) and write where
it may. For high-stakes grading run the grader in a container or as a user that owns nothing else.
"""

import contextlib
import ctypes
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MEMORY = 4 << 30  # bytes of address space a child may map
FILE_SIZE = 64 << 20  # bytes, the largest file a child may write
PROCESSES = 64  # processes (and threads) a child may add to what its user runs already; root is exempt
PASSED_ON = ("PATH", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SYSTEMROOT")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Run:
    returncode: int | None  # None: killed at the time limit
    output: str  # the end of what it printed (stdout and stderr)

    @property
    def timed_out(self):
        return self.returncode is None


def environment(folder, **extra):
    """The child's environment: the few variables it needs, its HOME and TMPDIR inside `folder`,
    one BLAS thread (results that do not depend on the machine), the CPU kernels off."""
    tmp = Path(folder) / ".tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: os.environ[k] for k in PASSED_ON if k in os.environ}
    env.update(HOME=str(folder), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MINIVIT_KERNELS="0",
               MPLBACKEND="Agg", **extra)  # fmt: skip
    return env


def _limits(memory):
    processes = _processes_of_this_user() + PROCESSES  # counted before the fork: `apply` runs in the child, kept short

    def apply():
        import resource

        for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, FILE_SIZE),
                             (resource.RLIMIT_CORE, 0), (getattr(resource, "RLIMIT_NPROC", None), processes)):  # fmt: skip
            if limit is None:
                continue
            with contextlib.suppress(ValueError, OSError):  # a limit the platform does not have
                resource.setrlimit(limit, (value, value))

    return apply


def run(argv, folder, timeout, memory=MEMORY, env=None):
    """Run argv in `folder` within the limits; returns a Run. Nothing it started outlives the call."""
    before = _children()
    with tempfile.TemporaryFile() as out:  # outside the folder, and read through this handle: the child cannot swap it
        child = subprocess.Popen(argv, cwd=folder, env=env or environment(folder), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_limits(memory) if os.name == "posix" else None)  # fmt: skip
        try:
            returncode = child.wait(timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _kill_group(child.pid)
            child.wait()
            _kill_adopted(before)
        out.seek(max(0, out.seek(0, os.SEEK_END) - 4000))
        return Run(returncode, out.read(4000).decode("utf-8", "replace"))


def read_file(path, limit):
    """The bytes of a regular file the child wrote, or None: never a FIFO, device, folder or symbolic link
    (which could hang or flood the grader), never more than `limit` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        found = os.fstat(fd)
        return f.read(limit) if stat.S_ISREG(found.st_mode) and found.st_size <= limit else None


def _kill_group(pgid):
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(pgid, signal.SIGKILL)


def _processes_of_this_user():
    """How many threads this user runs now (Linux: from /proc; elsewhere a generous guess)."""
    uid, count = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
    return count or 4096


def _children():
    """The pids whose parent is this process (Linux: from /proc; elsewhere: empty)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
            if int(fields[1]) == me:
                found.add(int(entry.parent.name))
    return found


def _kill_adopted(before, rounds=200):
    """Kill and reap every child this process has now but did not have before: the orphans of a run,
    handed to this process by `reaping`. Repeated while killing them hands over more."""
    for _ in range(rounds):
        left = _children() - before
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        time.sleep(0.01)


@contextlib.contextmanager
def reaping():
    """While inside, this process adopts the orphans of its descendants (Linux's child subreaper), so
    that `run` can find and kill a process that left its group; elsewhere only the group is killed."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        if prctl is not None:
            prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
