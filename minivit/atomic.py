"""Writing files atomically: a crash or Ctrl-C never leaves a half-written file (a checkpoint, a dataset
cache, a palette, a grade) where a later run would trust it. Every layer that writes files uses this."""

import os
import tempfile
from contextlib import contextmanager

import numpy as np


@contextmanager
def atomic_file(path, prefix=".tmp-", suffix=""):
    """A binary file to write in place of `path`. It is a temporary file in the same folder, renamed
    onto `path` only when the block ends without an error, and deleted otherwise: a crash or Ctrl-C
    never leaves a half-written file where a later run would trust it."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=prefix, suffix=suffix)
    try:
        os.chmod(tmp, _mode_of_a_plain_write(path))  # mkstemp makes it 0600: others could not read it
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _mode_of_a_plain_write(path):
    """The permissions open(path, "wb") would leave: an existing file's own, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)  # the only way to read it is to set it; put back at once
        os.umask(umask)
        return 0o666 & ~umask


def save_npz(path, arrays):
    """np.savez, written atomically."""
    with atomic_file(path, suffix=".npz") as f:
        np.savez(f, **arrays)


def write_text(path, text):
    """Write a str (UTF-8) to path, atomically."""
    with atomic_file(path) as f:
        f.write(text.encode())
