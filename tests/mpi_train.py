"""Run by tests/test_distributed.py on N processes (mpiexec -n N python tests/mpi_train.py SPEC): train or
resume one run through minivit.train, then write what every process did to SPEC's "report" (rank 0).

SPEC is JSON: {"config": {TrainConfig fields} or null to resume, "run_dir", "data_dir", "report",
"fail": [rank, epoch, step, "raise" | "kill" | "interrupt"] or null}: after that step, that process raises,
is killed (kill -9) or gets a Ctrl-C (SIGINT, as if it had reached that process only).
"""

import hashlib
import json
import os
import signal
import sys

import numpy as np

from minivit import distributed
from minivit.config import TrainConfig
from minivit.optim import AdamW
from minivit.train import Interrupted, resume, train

spec = json.loads(sys.argv[1])
world = distributed.world()
written = []  # the files this process put in place (minivit.atomic renames each one onto its path)
rename = os.replace


def counting_rename(src, dst, *args, **kwargs):
    written.append(os.path.basename(dst))
    return rename(src, dst, *args, **kwargs)


os.replace = counting_rename
live = {}  # the parameters this process trains, as its optimiser holds them
adamw_step = AdamW.step


def recording_step(self):
    adamw_step(self)
    live["params"] = self.params


AdamW.step = recording_step


def fail(epoch, step):
    rank, at_epoch, at_step, how = spec["fail"]
    if world.rank == rank and (epoch, step) == (at_epoch, at_step):
        if how == "raise":
            raise RuntimeError(f"a fault on process {rank}")
        os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)


callbacks = [fail] if spec["fail"] else []
stopped = False
try:
    if spec["config"] is None:
        resume(spec["run_dir"], data_dir=spec["data_dir"], progress=False, callbacks=callbacks)
    else:
        config = TrainConfig(**spec["config"])
        train(config, spec["run_dir"], data_dir=spec["data_dir"], progress=False, callbacks=callbacks)
except Interrupted:
    stopped = True

# Every process's own parameters, to the last bit (rank 0's checkpoint alone would not show the others').
params = b"".join(np.ascontiguousarray(p.data).tobytes() for p in live["params"])
report = {"size": world.size, "written": [written], "digests": [hashlib.sha256(params).hexdigest()], "stopped": [stopped]}
if world.size > 1:
    report["written"] = world.comm.gather(written)
    report["digests"] = world.comm.gather(report["digests"][0])
    report["stopped"] = world.comm.gather(stopped)
if world.rank == 0:
    with open(spec["report"], "w") as f:
        json.dump(report, f)
