"""Row blocks on every core: the one trick the CPU kernels share.

A row-wise op (LayerNorm over each token, softmax over each row of scores, GELU elementwise) makes
several passes over its array. Done on the whole array, each pass streams it from main memory
again; cut into blocks of ~512 KiB, a block stays in cache across all its passes. And since NumPy
releases the GIL inside ufuncs and BLAS calls, the blocks can run on all cores at once.

Blocks that call matmuls (the attention core's, one image per block) run them with one BLAS thread
each while the blocks are on the pool: the blocks are then the parallelism. Left at its own thread
count, OpenBLAS spreads each small per-head product over every core, and two pool threads asking it
for every core at once contend (at iGPT's 256 tokens the pooled attention ran 5× slower than the
plain op; one BLAS thread per block, it runs 1.8× faster than the blocks one after another with
every BLAS thread: 258 against 142 ms at B 128, T 256, 2 cores, OpenBLAS 0.3.31, measured).
"""

import concurrent.futures
import contextlib
import os
import threading

BLOCK_BYTES = 1 << 19  # a block's rows should stay in cache across an op's passes
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_threads = int(os.environ.get("MINIVIT_THREADS", _cores))
_pool = None
_blas = None  # numpy's BLAS, found on first use (threadpoolctl)


def map_blocks(kernel, rows, row_bytes, matmuls=False):
    """Call kernel(slice) for consecutive blocks of rows covering range(rows).

    Kernels must write only their own rows. Called from inside a kernel (whose thread is already one
    of the pool's), one call covers every row. matmuls=True: the kernel calls the BLAS, which then
    runs on one thread per block while the blocks run on the pool (see above).
    """
    if rows == 0 or threading.current_thread().name.startswith("minivit"):
        kernel(slice(0, rows))
        return
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    blocks = [slice(i, min(i + step, rows)) for i in range(0, rows, step)]
    if _threads == 1 or len(blocks) == 1:  # small arrays are not worth a thread hand-off
        for block in blocks:
            kernel(block)
        return
    global _pool, _blas
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(_threads, thread_name_prefix="minivit")
    if matmuls and _blas is None:
        from threadpoolctl import ThreadpoolController  # on first use: the GPU backend never needs it

        _blas = ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=1) if matmuls else contextlib.nullcontext():
        for future in [_pool.submit(kernel, block) for block in blocks]:
            future.result()  # re-raises a kernel's exception here
