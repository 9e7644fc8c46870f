"""The matmuls of a ViT block's linear layers: NumPy's BLAS against PyTorch's, same shapes, same threads.

    python benchmarks/matmul.py

A training step of the `tiny` preset spends most of its time in the four linear layers of each
block (q/k/v, output projection, MLP in and out), each one forward product and two backward ones:

    forward   Y  = X W       (M, D_in) @ (D_in, D_out)
    backward  dX = dY Wᵀ     (M, D_out) @ (D_out, D_in)
              dW = Xᵀ dY     (D_in, M) @ (M, D_out)

with M = batch × tokens rows. This script times each product on float32 random data with NumPy
(`@`, whatever BLAS NumPy was built with) and with torch (`@` on CPU tensors sharing the same
memory), --rounds times each, the two taking turns to go first, and prints each one's median
GFLOP/s and their ratio.
The last line weighs every product by its share of the work, as in a step. It says how much of
the gap in benchmarks/train_step.py is the BLAS itself, which minivit's code cannot change.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="BLAS threads for NumPy, torch.set_num_threads for torch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5, help="products timed together per round and side")
    return p.parse_args()


def seconds_per_product(operands, repeats):
    """Mean seconds of `a @ b` over `repeats` products, for (a, b) = operands (NumPy arrays or torch tensors)."""
    a, b = operands
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats


def main():
    args = parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # read once, when NumPy loads its BLAS: so before the imports below
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as in training: idle BLAS threads stop spinning at once
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    import numpy as np

    try:
        import torch
    except ImportError:
        sys.exit("this benchmark compares NumPy with torch, which is not installed (pip install torch==2.13.0)")

    import minivit

    torch.set_num_threads(args.threads)
    cfg = minivit.preset(args.preset)
    rows = args.batch_size * ((cfg.image_size // cfg.patch_size) ** 2 + (cfg.pool == "cls"))
    d, m = cfg.dim, cfg.mlp_dim
    layers = {"qkv": (d, 3 * d), "proj": (d, d), "mlp.fc1": (d, m), "mlp.fc2": (m, d)}
    rng = np.random.default_rng(0)
    print(f"preset {args.preset}: M = {args.batch_size} × {rows // args.batch_size} = {rows} rows, float32, "
          f"{args.threads} threads; numpy {np.__version__}, torch {torch.__version__}")  # fmt: skip
    header = ("layer", "product", "shape (M, K) @ (K, N)", "numpy GFLOP/s", "torch GFLOP/s", "ratio")
    print("{:8} {:8} {:>26} {:>14} {:>14} {:>6}".format(*header))

    total = {"numpy": 0.0, "torch": 0.0}  # seconds, summed over all products
    for name, (d_in, d_out) in layers.items():
        x = rng.standard_normal((rows, d_in), dtype=np.float32)
        w = rng.standard_normal((d_in, d_out), dtype=np.float32)
        dy = rng.standard_normal((rows, d_out), dtype=np.float32)
        products = {"Y=XW": (x, w), "dX=dYWᵀ": (dy, w.T), "dW=XᵀdY": (x.T, dy)}  # the transposes are views
        for product, (a, b) in products.items():
            (mm, k), n = a.shape, b.shape[1]
            sides = {"numpy": (a, b), "torch": (torch.from_numpy(a), torch.from_numpy(b))}  # the same memory
            times = {side: [] for side in sides}
            for side, operands in sides.items():
                seconds_per_product(operands, 1)  # warm up
            for r in range(args.rounds):
                for side in list(sides)[:: 1 if r % 2 == 0 else -1]:  # each goes first every other round
                    times[side].append(seconds_per_product(sides[side], args.repeats))
            gflops = {}
            for side, seconds in times.items():
                gflops[side] = 2 * mm * k * n / statistics.median(seconds) / 1e9
                total[side] += statistics.median(seconds)
            shape = f"({mm}, {k}) @ ({k}, {n})"
            print(f"{name:8} {product:8} {shape:>26} {gflops['numpy']:14.0f} {gflops['torch']:14.0f} "
                  f"{gflops['numpy'] / gflops['torch']:6.2f}")  # fmt: skip
    ms = {side: 1000 * seconds for side, seconds in total.items()}
    print(f"\nall {3 * len(layers)} products, weighted as in a step: numpy / torch = {ms['torch'] / ms['numpy']:.2f}"
          f" (numpy {ms['numpy']:.1f} ms, torch {ms['torch']:.1f} ms per block)")  # fmt: skip


if __name__ == "__main__":
    main()
