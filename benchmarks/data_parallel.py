"""Data parallelism on one machine, and on paper on many: 1 process × T threads against N processes × 1 thread.

    python benchmarks/data_parallel.py                   # the tiny ViT, batch 128, 2 cores
    python benchmarks/data_parallel.py --model igpt      # iGPT's cpu preset, batch 64

Each side trains the same global batch with minivit's step as the loop takes it under mpiexec (each
process its block of rows: forward, loss share, backward; the gradients summed by
distributed.MPIWorld.sum_gradients; AdamW), on float32 random data, in the environment of
benchmarks/train_step.py (its malloc thresholds). "1×T" is one process with T BLAS and kernel threads; "N×1" is `mpiexec -n N`, one thread each. The sides take turns, --rounds times
--steps timed steps after --warmup, and the script prints each side's median images/s and, for N×1,
the median time of the gradient Allreduce per step (the slowest process's, as the step waits for it).

Then, on paper, the α–β model of a ring allreduce of n bytes over p nodes,

    t_allreduce(p) = 2 (p − 1) α + 2 (p − 1) / p · n · β      (distributed.ring_allreduce_seconds)

(each node sends and receives 2 (p − 1) chunks of n / p bytes: reduce-scatter, then all-gather), with
α the latency of one message and β the seconds per byte of the link (--latency-us, --gbit). With the
measured compute of one process's step on B images, t(B), it prints the efficiency
t(B_p) / (t(B_p) + t_allreduce(p)) for 8, 64 and 512 nodes, for a fixed global batch (each node's
share B / p shrinks: strong scaling; t(B / p) taken as t(B) / p, the best case) and for a fixed batch
per node (the global batch grows with p: weak scaling). Overlapping the reduction with the backward
(bucketed, as PyTorch's DDP does) would hide up to the backward's time, about 2/3 of a step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from minivit.distributed import mpiexec as find_mpiexec  # noqa: E402
from minivit.distributed import ring_allreduce_seconds  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit", choices=("vit", "igpt"))
    p.add_argument("--batch-size", type=int, help="the global batch (default: ViT 128, iGPT 64)")
    p.add_argument("--processes", type=int, default=2, help="N of the N×1 side")
    p.add_argument("--threads", type=int, default=2, help="T of the 1×T side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gbit", type=float, default=10.0, help="the model's network: Gbit/s per link")
    p.add_argument("--latency-us", type=float, default=20.0, help="the model's network: α, µs per message")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def worker(args):
    """One side's processes: time --warmup + --steps steps, print (rank 0) JSON of the step times."""
    import minivit
    from minivit import distributed

    world = distributed.world()
    minivit.backend.seed(0)
    rng = np.random.default_rng(0)
    if args.model == "vit":
        model = minivit.ViT.from_preset("tiny")
        inputs = rng.random((args.batch_size, 32, 32, 3), dtype=np.float32)
        targets = rng.integers(0, 10, args.batch_size)
    else:
        model = minivit.IGPT.from_preset("cpu")
        inputs = targets = rng.integers(0, model.config.vocab_size, (args.batch_size, model.num_tokens))
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rows = world.rows(args.batch_size)
    x, y = inputs[rows], targets[rows].reshape(-1)
    share = len(x) / args.batch_size
    steps, reduces = [], []
    for i in range(args.warmup + args.steps):
        if world.size > 1:
            world.comm.Barrier()
        start = time.perf_counter()
        model.zero_grad()
        logits = model(x)
        loss, cache = minivit.ops.cross_entropy_forward(logits.reshape(len(y), -1), y)
        dlogits = minivit.ops.cross_entropy_backward(cache).reshape(logits.shape)
        dlogits *= share
        model.backward(dlogits)
        reduce_start = time.perf_counter()
        world.sum_gradients(model.parameters())
        reduce = time.perf_counter() - reduce_start
        opt.step()
        step = time.perf_counter() - start
        if world.size > 1:  # the step ends when the slowest process's does
            step, reduce = world.comm.allreduce(step, op=max_op()), world.comm.allreduce(reduce, op=max_op())
        if i >= args.warmup:
            steps.append(step)
            reduces.append(reduce)
    if world.rank == 0:
        print(json.dumps({"steps": steps, "reduces": reduces, "params": model.num_parameters()}), flush=True)


def max_op():
    from mpi4py import MPI

    return MPI.MAX


def side(args, processes, threads):
    """Run one side once; returns its JSON report."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MINIVIT_THREADS": str(threads), "OPENBLAS_THREAD_TIMEOUT": "4",
           # as benchmarks/train_step.py: glibc keeps big buffers mapped between steps
           "MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}  # fmt: skip
    command = [sys.executable, __file__, "--worker", "--model", args.model, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    if processes > 1:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            sys.exit("mpiexec not found: pip install mpi4py mpich")
        command = [mpiexec, "-n", str(processes), *command]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    args.batch_size = args.batch_size or (128 if args.model == "vit" else 64)
    if args.worker:
        return worker(args)
    a, b = f"1×{args.threads}", f"{args.processes}×1"
    print(f"{args.model} ({'tiny' if args.model == 'vit' else 'cpu'} preset), global batch {args.batch_size}, "
          f"float32; {a}: one process, {args.threads} threads; {b}: mpiexec -n {args.processes}, one thread each")  # fmt: skip
    print(f"{'round':<7}{a + ' img/s':>14}{b + ' img/s':>14}{'allreduce ms':>14}")
    rates = {a: [], b: []}
    reduce_ms = []
    for r in range(args.rounds):
        one = side(args, 1, args.threads)
        many = side(args, args.processes, 1)
        rates[a] += [args.batch_size / s for s in one["steps"]]
        rates[b] += [args.batch_size / s for s in many["steps"]]
        reduce_ms += [1e3 * s for s in many["reduces"]]
        print(f"{r + 1:<7}{statistics.median(args.batch_size / s for s in one['steps']):>14.1f}"
              f"{statistics.median(args.batch_size / s for s in many['steps']):>14.1f}"
              f"{1e3 * statistics.median(many['reduces']):>14.1f}")  # fmt: skip
    ra, rb, red = statistics.median(rates[a]), statistics.median(rates[b]), statistics.median(reduce_ms)
    print(f"median: {a} {ra:.1f} img/s, {b} {rb:.1f} img/s ({b} / {a} = {rb / ra:.2f}); Allreduce {red:.1f} ms "
          f"of a {1e3 * args.batch_size / rb:.0f} ms step")  # fmt: skip

    nbytes = 4 * one["params"]
    alpha, beta = args.latency_us * 1e-6, 8 / (args.gbit * 1e9)
    step_s = args.batch_size / ra  # one process's step on the whole batch, all its cores
    print(f"\nring allreduce on paper: {one['params']:,} float32 gradients = {nbytes / 2**20:.1f} MiB, α = "
          f"{args.latency_us:g} µs, {args.gbit:g} Gbit/s; compute t(B = {args.batch_size}) = {1e3 * step_s:.0f} ms "
          f"on one node like this one")  # fmt: skip
    print(f"{'nodes':>6}{'allreduce ms':>14}{'strong: t(B/p) ms':>19}{'efficiency':>12}{'weak: t(B) ms':>15}"
          f"{'efficiency':>12}")  # fmt: skip
    for p in (8, 64, 512):
        comm = ring_allreduce_seconds(nbytes, p, alpha, beta)
        strong = step_s / p
        strong_cells = (f"{1e3 * strong:>19.1f}{strong / (strong + comm):>12.0%}" if p <= args.batch_size
                        else f"{'fewer images than nodes':>31}")  # fmt: skip
        print(f"{p:>6}{1e3 * comm:>14.1f}{strong_cells}{1e3 * step_s:>15.0f}{step_s / (step_s + comm):>12.0%}")


if __name__ == "__main__":
    main()
