"""Row blocks on every core: the one trick the CPU kernels share.

A row-wise op (LayerNorm over each token, softmax over each row of scores, GELU elementwise) makes
several passes over its array. Done on the whole array, each pass streams it from main memory
again; cut into blocks of ~512 KiB, a block stays in cache across all its passes. And since NumPy
releases the GIL inside ufuncs and BLAS calls, the blocks can run on all cores at once.
"""

import concurrent.futures
import os
import threading

BLOCK_BYTES = 1 << 19  # a block's rows should stay in cache across an op's passes
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_threads = int(os.environ.get("MINIVIT_THREADS", _cores))
_pool = None


def map_blocks(kernel, rows, row_bytes, parallel=True):
    """Call kernel(slice) for consecutive blocks of rows covering range(rows).

    Kernels must write only their own rows. Called from inside a kernel (whose thread is already one
    of the pool's), one call covers every row. parallel=False runs the blocks one after another in
    this thread (for kernels whose matmuls are big enough for the BLAS to spread over the cores).
    """
    if rows == 0 or threading.current_thread().name.startswith("minivit"):
        kernel(slice(0, rows))
        return
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    blocks = [slice(i, min(i + step, rows)) for i in range(0, rows, step)]
    if not parallel or _threads == 1 or len(blocks) == 1:  # small arrays are not worth a thread hand-off
        for block in blocks:
            kernel(block)
        return
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(_threads, thread_name_prefix="minivit")
    for future in [_pool.submit(kernel, block) for block in blocks]:
        future.result()  # re-raises a kernel's exception here
