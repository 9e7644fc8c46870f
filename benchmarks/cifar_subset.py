"""A smaller CIFAR-10 cache, small enough to travel with a working tree to a GPU machine.

    python benchmarks/cifar_subset.py data/gpu --train 14000 --test 2000 --archive ../shared/data/cifar-10-python.tar.gz

writes DIR/cifar10.npz holding the first --train training images and the first --test test images
(the official archive's order), in the cache format load_cifar reads: `--data-dir DIR` (or
MINIVIT_DATA=DIR) then trains on them as if they were the whole dataset. The default sizes make a
file of about 49 MiB, under the 64 MiB that travels with a working tree (benchmarks/gpu_check.sh).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from minivit.atomic import save_npz  # noqa: E402
from minivit.data import load_cifar  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the folder to write cifar10.npz into (not the full cache's folder)")
    p.add_argument("--train", type=int, default=14_000, help="training images to keep (from the first)")
    p.add_argument("--test", type=int, default=2_000, help="test images to keep (from the first)")
    p.add_argument("--archive", help="the CIFAR-10 .tar.gz, if the full cache is not built yet")
    p.add_argument("--data-dir", help="where the full cache lives (default: minivit's data folder)")
    args = p.parse_args()
    data = load_cifar("cifar10", data_dir=args.data_dir, source=args.archive)
    if not 1 <= args.train <= len(data.train_images) or not 1 <= args.test <= len(data.test_images):
        p.error(f"--train must be in [1, {len(data.train_images)}] and --test in [1, {len(data.test_images)}]")
    target = args.out / "cifar10.npz"
    if args.data_dir and target.resolve() == (Path(args.data_dir) / "cifar10.npz").resolve():
        p.error(f"{target} is the full cache itself; write the subset to another folder")
    save_npz(target, {"train_images": data.train_images[: args.train], "train_labels": data.train_labels[: args.train],
                      "test_images": data.test_images[: args.test], "test_labels": data.test_labels[: args.test],
                      "classes": np.array(data.classes)})  # fmt: skip
    print(f"{target}: {args.train} training and {args.test} test images, {target.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
