"""Data parallelism over MPI (minivit/distributed.py): N processes on the loopback train what one process
trains, every process holds the same parameters, rank 0 alone writes the run folder, and a failing
process ends the job instead of leaving the others waiting."""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from minivit import distributed
from minivit.checkpoint import load_checkpoint
from minivit.config import TrainConfig

MPIEXEC = distributed.mpiexec()
try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (MPIEXEC and HAVE_MPI4PY), reason="mpi4py or mpiexec is not installed "
                               "(pip install mpi4py mpich)")  # fmt: skip
DRIVER = Path(__file__).with_name("mpi_train.py")
TIMEOUT = 300

# 96 images in batches of 24 (8 rows each on 3 processes, 12 on 2), 2 epochs: 8 steps
COMMON = dict(epochs=2, batch_size=24, lr=2e-3, warmup_epochs=0.5, train_subset=96, test_subset=50,
              eval_batch_size=50)  # fmt: skip
VIT = TrainConfig(model="mini", dim=16, depth=2, heads=2, mlp_dim=32, patch_size=8, dropout=0.1,
                  patch_dropout=0.25, mixup=0.8, cutmix=1.0, mix_prob=0.5, **COMMON)  # fmt: skip
IGPT = TrainConfig(task="igpt", model="cpu", dim=16, depth=2, heads=2, mlp_dim=32, image_size=8, vocab_size=16,
                   palette_sample=2000, label_smoothing=0.0, crop_padding=0, weight_decay=0.01, **COMMON)  # fmt: skip


def run(processes, config, run_dir, cifar_dir, fail=None, check=True):
    """Train (config) or resume (None) on `processes` processes; returns (the report, the finished process)."""
    report = Path(run_dir).with_suffix(".report.json")
    spec = {"config": None if config is None else asdict(config), "run_dir": str(run_dir),
            "data_dir": str(cifar_dir), "report": str(report), "fail": fail}  # fmt: skip
    command = [sys.executable, str(DRIVER), json.dumps(spec)]
    if processes > 1:
        command = [MPIEXEC, "-n", str(processes), *command]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MINIVIT_THREADS": "1"}  # 2 cores: no oversubscription
    proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(report.read_text()), proc
    return None, proc


def params(run_dir):
    """The checkpoint's parameters as trained (its arrays: the loaded model would be float32) and its meta."""
    _, meta, arrays = load_checkpoint(Path(run_dir) / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith("model.")}, meta


def assert_close_to(a, b, rtol):
    for name in a:
        scale = max(np.abs(b[name]).max(), 1e-30)
        error = np.abs(a[name] - b[name]).max() / scale
        assert error <= rtol, f"{name}: relative difference {error:.1e} (tolerance {rtol:g})"


def test_rows_split_a_batch_into_blocks_that_cover_it():
    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size

    hook = sys.excepthook
    try:
        for size in (1, 2, 3, 5):
            for total in (size, 7, 24, 25):
                blocks = [distributed.MPIWorld(Comm(r, size)).rows(total) for r in range(size)]
                covered = [i for block in blocks for i in range(total)[block]]
                assert covered == list(range(total))
                assert max(map(len, map(range(total).__getitem__, blocks))) - min(
                    len(range(total)[b]) for b in blocks) <= 1  # fmt: skip
    finally:
        sys.excepthook = hook
    assert distributed.Single().rows(9) == slice(0, 9)


def test_a_rows_generator_draws_for_the_whole_batch():
    whole = np.random.default_rng(3).random((10, 4, 2))
    part = distributed.RowsGenerator(np.random.default_rng(3), slice(4, 7), 10).random((3, 4, 2))
    np.testing.assert_array_equal(part, whole[4:7])
    with pytest.raises(ValueError, match=r"expected a shape of 3 rows \(this rank's of 10\), got \(4, 2\)"):
        distributed.RowsGenerator(np.random.default_rng(3), slice(4, 7), 10).random((4, 2))


@needs_mpi
@pytest.mark.parametrize("name, config", [("vit", VIT), ("igpt", IGPT)])
def test_two_and_three_processes_train_what_one_trains(name, config, cifar_dir, tmp_path):
    """float64: the parameters after 8 steps within 1e-12 (relative) of one process's, the same to the
    last bit on every process; the training and test metrics (each process scoring its block of the
    test images) within 1e-12 too; the run folder written by rank 0 alone, each file as one process does."""
    config = replace(config, dtype="float64")
    single, _ = run(1, config, tmp_path / "one", cifar_dir)
    reference, meta = params(tmp_path / "one")
    for n in (2, 3):
        report, _ = run(n, config, tmp_path / f"n{n}", cifar_dir)
        assert report["size"] == n and len(set(report["digests"])) == 1, "the processes' parameters differ"
        mine, their_meta = params(tmp_path / f"n{n}")
        assert_close_to(mine, reference, 1e-12)
        assert [m["epoch"] for m in their_meta["state"]["history"]] == [1, 2]
        assert report["written"][0] == single["written"][0]  # config, checkpoints, metrics, curves: as one process
        assert all(not files for files in report["written"][1:]), report["written"]
        for a, b in zip(their_meta["state"]["history"], meta["state"]["history"], strict=True):
            scored = [k for k in b if k.startswith(("train_", "test_"))]  # the test set split over the processes
            assert sorted(scored) == sorted(k for k in a if k.startswith(("train_", "test_")))
            for key in scored:
                assert abs(a[key] - b[key]) <= 1e-12 * abs(b[key]), key


@needs_mpi
def test_float32_on_two_processes_stays_within_float_noise(cifar_dir, tmp_path):
    run(1, VIT, tmp_path / "one", cifar_dir)
    report, _ = run(2, VIT, tmp_path / "two", cifar_dir)
    assert len(set(report["digests"])) == 1
    assert_close_to(params(tmp_path / "two")[0], params(tmp_path / "one")[0], 1e-4)


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_process_ends_the_job(how, cifar_dir, tmp_path):
    """A process that raises (or is killed) at epoch 1, step 2: mpiexec ends every process with an error in
    bounded time (the others were waiting for it in an Allreduce), and no checkpoint was written."""
    start = time.monotonic()
    _, proc = run(2, VIT, tmp_path / "failed", cifar_dir, fail=[1, 1, 2, how], check=False)
    assert proc.returncode != 0
    assert time.monotonic() - start < 120
    if how == "raise":
        assert "a fault on process 1" in proc.stderr
    assert not (tmp_path / "failed" / "checkpoint.npz").exists()


@needs_mpi
def test_resume_after_kill_on_another_number_of_processes(cifar_dir, tmp_path):
    """Killed (kill -9 on rank 1) in epoch 2 on 2 processes, resumed on 3: the parameters of an
    uninterrupted run on one process, within 1e-12 (float64)."""
    config = replace(IGPT, dtype="float64")
    run(1, config, tmp_path / "one", cifar_dir)
    _, proc = run(2, config, tmp_path / "killed", cifar_dir, fail=[1, 2, 2, "kill"], check=False)
    assert proc.returncode != 0
    assert params(tmp_path / "killed")[1]["state"]["epoch"] == 1  # epoch 1's checkpoint, kept
    report, _ = run(3, None, tmp_path / "killed", cifar_dir)
    assert len(set(report["digests"])) == 1
    assert_close_to(params(tmp_path / "killed")[0], params(tmp_path / "one")[0], 1e-12)


@needs_mpi
def test_ctrl_c_on_one_process_stops_all_at_the_same_step(cifar_dir, tmp_path):
    """SIGINT to process 2 of 3 only, after epoch 1 step 2: every process stops after that step (the flag
    is summed each step), the checkpoint holds it, and resuming on 2 processes ends where one process
    that never stopped ends (float64, within 1e-12)."""
    config = replace(VIT, dtype="float64")
    run(1, config, tmp_path / "one", cifar_dir)
    report, _ = run(3, config, tmp_path / "stopped", cifar_dir, fail=[2, 1, 2, "interrupt"])
    assert report["stopped"] == [True, True, True] and len(set(report["digests"])) == 1
    state = params(tmp_path / "stopped")[1]["state"]
    assert (state["epoch"], state["step"]) == (0, 2)
    run(2, None, tmp_path / "stopped", cifar_dir)
    assert_close_to(params(tmp_path / "stopped")[0], params(tmp_path / "one")[0], 1e-12)


@needs_mpi
def test_masked_patch_prediction_refuses_several_processes(cifar_dir, tmp_path):
    config = TrainConfig(task="mpp", model="mini", dim=16, depth=1, heads=2, mlp_dim=32, patch_size=8,
                         label_smoothing=0.0, **COMMON)  # fmt: skip
    _, proc = run(2, config, tmp_path / "mpp", cifar_dir, check=False)
    assert proc.returncode != 0
    assert "task 'mpp' (the ViT's masked patch prediction) trains on one process only" in proc.stderr


RING_CHECK = """
import numpy as np
from mpi4py import MPI
from minivit.distributed import ring_allreduce
comm = MPI.COMM_WORLD
for length in (1, 5, 10, 1001):
    x = np.random.default_rng(comm.Get_rank()).standard_normal(length)
    whole = np.empty_like(x)
    comm.Allreduce(x, whole, op=MPI.SUM)
    ring = ring_allreduce(comm, x.copy())
    assert np.allclose(ring, whole, rtol=1e-12, atol=1e-12), (length, np.abs(ring - whole).max())
    counts = np.arange(length, dtype=np.float64) * (comm.Get_rank() + 1)  # exact in any order of addition
    assert np.array_equal(ring_allreduce(comm, counts), np.arange(length) * comm.Get_size() * (comm.Get_size() + 1) / 2)
if comm.Get_rank() == 0:
    print("ring allreduce equals MPI's")
"""


@needs_mpi
@pytest.mark.parametrize("processes", [2, 3, 4])
def test_the_hand_written_ring_allreduce_sums_like_mpi(processes):
    """Chunks of unequal length (a buffer shorter than the ring included): the same sums as MPI_Allreduce."""
    proc = subprocess.run([MPIEXEC, "-n", str(processes), sys.executable, "-c", RING_CHECK], capture_output=True,
                          text=True, timeout=TIMEOUT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ring allreduce equals MPI's" in proc.stdout
