"""Data parallelism over MPI: N processes train one model, each computing its own rows of every batch.

    mpiexec -n 2 python -m minivit train --recipe quick      # one model, two processes

Every process (a rank) holds the whole model and the whole dataset, and takes the same steps:

1. the same global batch of B images as one process would, with the same random draws: the shuffle,
   augmentation and dropout come from the (seed, stream, epoch, step) streams (train.step_seed), drawn
   for all B rows; rank r keeps its block of B_r rows (World.rows), so what is computed does not
   depend on N;
2. forward and backward on its B_r rows only, its loss counted as its share of the batch's: the
   batch loss is a mean over the batch, L = (1/B) Σ_i ℓ_i, so rank r's share is (1/B) Σ_{i in r} ℓ_i;
3. the shares' gradients summed over the ranks (Allreduce):

       ∇L = Σ_r ∇ (1/B) Σ_{i in r} ℓ_i

   so every rank holds the whole batch's gradient, up to the order of the floating-point additions;
4. the same clipping, NaN check and AdamW step on every rank: the parameters stay equal.

Without mpiexec (or with one process) the world is `Single`: one rank, every sum the identity, the
same code path. The run folder is written by rank 0 only; every rank reads the data and, to resume,
the checkpoint, so the folders must be on a filesystem every rank sees (one machine, or a cluster's
shared filesystem).
"""

import contextlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from . import backend

# The number of processes, as MPICH's (and Intel MPI's) and Open MPI's launchers tell each process they start.
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class Single:
    """One process: rank 0 of 1. Every reduction is the identity."""

    rank, size = 0, 1

    def rows(self, total):
        """This rank's block of a batch of `total` rows: all of them."""
        return slice(0, total)

    def sum_gradients(self, params):
        """Sum every parameter's .grad over the ranks, in place: nothing to add on one process."""

    def sum(self, values):
        """The sums over the ranks of a list of numbers: the numbers themselves."""
        return list(values)


class MPIWorld(Single):
    """The processes mpiexec started, on MPI's COMM_WORLD (mpi4py)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._buffers = {}  # dtype -> the flat buffer the gradients are summed in
        shown = sys.excepthook

        def end_all(*exc_info):  # an uncaught error: the other processes may wait for this one in a collective
            shown(*exc_info)
            self.abort(1)

        sys.excepthook = end_all

    def rows(self, total):
        """This rank's block of a batch of `total` rows: rows total·r/N ... total·(r+1)/N - 1 (the
        blocks differ in size by at most one row, and a rank may get none when total < N)."""
        return slice(total * self.rank // self.size, total * (self.rank + 1) // self.size)

    def sum_gradients(self, params):
        """Sum every parameter's .grad over the ranks, in place: the gradients are copied into one flat
        buffer per dtype, summed by one Allreduce each (not one call per tensor), and copied back."""
        from mpi4py import MPI

        by_dtype = {}
        for p in params:
            by_dtype.setdefault(np.dtype(p.grad.dtype), []).append(p)
        for dtype, group in by_dtype.items():
            xp = backend.array_module(group[0].grad)
            size = sum(p.grad.size for p in group)
            flat = self._buffers.get(dtype)
            if flat is None or flat.size != size or backend.array_module(flat) is not xp:
                flat = self._buffers[dtype] = xp.empty(size, dtype=dtype)
            offsets = np.cumsum([0] + [p.grad.size for p in group])
            for p, start, stop in zip(group, offsets[:-1], offsets[1:], strict=True):
                flat[start:stop] = p.grad.reshape(-1)
            if xp is not np:
                xp.cuda.get_current_stream().synchronize()  # a CUDA-aware MPI reads device memory directly
            self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            for p, start, stop in zip(group, offsets[:-1], offsets[1:], strict=True):
                p.grad[...] = flat[start:stop].reshape(p.grad.shape)

    def sum(self, values):
        """The sums over the ranks of a list of numbers (losses, counts, flags), as float64."""
        from mpi4py import MPI

        local = np.asarray(values, dtype=np.float64)
        total = np.empty_like(local)
        self.comm.Allreduce(local, total, op=MPI.SUM)
        return total.tolist()

    def abort(self, status=1):
        """End every rank now: the others may be waiting in a collective call for this one."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


def ring_allreduce(comm, x, trace=None):
    """Sum a 1-D NumPy array x over the processes of comm, in place, as a ring allreduce does: what MPI's
    Allreduce does for big buffers, written out to be read (notebook 08 checks it against MPI's).

    x is cut into N chunks. Reduce-scatter: at step s = 0 ... N - 2 process r sends its chunk (r - s) mod N
    to process r + 1 and adds the chunk (r - s - 1) mod N that process r - 1 sends it to its own; after
    N - 1 steps process r holds chunk (r + 1) mod N summed over every process. All-gather: N - 1 more
    steps pass the summed chunks around the ring, each received chunk replacing the local one. Every
    process sends 2 (N - 1) chunks of len(x) / N: 2 (N - 1) / N · len(x) values in all, about 2 len(x)
    however many processes there are, which is why the ring scales. trace: called as trace(phase, step, x)
    after each step ("reduce-scatter" or "all-gather"), to watch the ring turn.
    """
    n, r = comm.Get_size(), comm.Get_rank()
    chunks = np.array_split(x, n)  # views of x
    right, left = (r + 1) % n, (r - 1) % n
    incoming = np.empty_like(chunks[0])  # the first chunk is the longest
    for s in range(n - 1):  # reduce-scatter
        mine = chunks[(r - s - 1) % n]
        comm.Sendrecv(chunks[(r - s) % n], dest=right, recvbuf=incoming[: len(mine)], source=left)
        mine += incoming[: len(mine)]
        if trace:
            trace("reduce-scatter", s, x)
    for s in range(n - 1):  # all-gather
        comm.Sendrecv(chunks[(r + 1 - s) % n], dest=right, recvbuf=chunks[(r - s) % n], source=left)
        if trace:
            trace("all-gather", s, x)
    return x


def ring_allreduce_seconds(nbytes, processes, latency_s, seconds_per_byte):
    """The α–β model of a ring allreduce of nbytes over p processes: 2 (p − 1) messages, each costing the
    latency α, and 2 (p − 1) / p · nbytes bytes through each link at β seconds a byte:

        t = 2 (p − 1) α + 2 (p − 1) / p · n β
    """
    p = processes
    return 2 * (p - 1) * latency_s + 2 * (p - 1) / p * nbytes * seconds_per_byte


def mpiexec():
    """The path of mpiexec: the one beside this Python (a virtual environment's, from the mpich wheel),
    else the one on PATH; None where there is none."""
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=os.pathsep.join([str(here), os.environ.get("PATH", "")]))


def launched_size():
    """How many processes the MPI launcher started, from its environment (1 without one)."""
    for name in _LAUNCHER_SIZE:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


_world = None


def world():
    """The processes this one trains with: MPIWorld under mpiexec with more than one process, else
    Single. Built once; importing mpi4py (which starts MPI) happens only under a launcher."""
    global _world
    if _world is None:
        size = launched_size()
        if size == 1:
            _world = Single()
        else:
            try:
                from mpi4py import MPI
            except ImportError as e:
                raise RuntimeError(f"started by an MPI launcher with {size} processes, but mpi4py is not "
                                   "installed; pip install mpi4py mpich (or run without mpiexec)") from e  # fmt: skip
            _world = MPIWorld(MPI.COMM_WORLD)
    return _world


class RowsGenerator:
    """A random Generator whose draws are for a whole batch, of which this rank keeps its rows.

    Dropout and PatchDropout draw masks shaped like their input, whose first axis is the batch. Under
    data parallelism that input holds this rank's rows only; drawn for the whole batch (from the same
    seeded generator on every rank) and cut to the rank's rows, each image's mask is the one a single
    process would draw for it.
    """

    def __init__(self, generator, rows, total):
        self.generator, self.rows, self.total = generator, rows, total

    def random(self, shape, dtype=np.float64):
        count = len(range(*self.rows.indices(self.total)))
        if not shape or shape[0] != count:
            raise ValueError(f"a data-parallel step draws per row of its batch: expected a shape of {count} rows "
                             f"(this rank's of {self.total}), got {tuple(shape)}")  # fmt: skip
        return self.generator.random((self.total, *shape[1:]), dtype=dtype)[self.rows]


@contextlib.contextmanager
def drawing_rows(xp, rows, total):
    """While active, the random draws of array module xp's generator (minivit.backend.rng: dropout masks,
    kept patches) are drawn for a whole batch of `total` rows, of which this process keeps `rows`."""
    generator = backend.rng(xp)
    backend.set_rng(RowsGenerator(generator, rows, total), xp)
    try:
        yield
    finally:
        backend.set_rng(generator, xp)
