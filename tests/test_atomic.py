"""Atomic writes (minivit/atomic.py): the file appears whole, with the permissions a plain write gives."""

import os

import pytest


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path, umask, mode):
    """A checkpoint or cache an instructor writes must be readable by students where the umask says so
    (the temporary file it is renamed from starts at 0600); a file written over keeps its own mode."""
    from minivit.atomic import atomic_file

    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "new.bin") as f:
            f.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as f:  # what a plain write gives, for comparison
            f.write(b"x")
        (tmp_path / "old.bin").write_bytes(b"old")
        os.chmod(tmp_path / "old.bin", 0o640)
        with atomic_file(tmp_path / "old.bin") as f:
            f.write(b"new")
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "new.bin").st_mode & 0o777) == oct(mode)
    assert os.stat(tmp_path / "new.bin").st_mode & 0o777 == os.stat(tmp_path / "plain.bin").st_mode & 0o777
    assert oct(os.stat(tmp_path / "old.bin").st_mode & 0o777) == oct(0o640)
    assert (tmp_path / "old.bin").read_bytes() == b"new"
