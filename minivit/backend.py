"""Which array module minivit computes with: NumPy (CPU) or CuPy (GPU).

This is the only file that imports CuPy. Everything above it takes the array module
from its inputs (`array_module(x)`), so the same ops run on either backend.

    import minivit.backend as backend
    backend.use("cupy")            # or MINIVIT_BACKEND=cupy in the environment
    x = backend.to_device(x_np)    # NumPy -> current backend
    y = backend.to_numpy(x)        # any backend -> NumPy
    backend.seed(0)                # seeds the generators of both backends
"""

import concurrent.futures
import os
import threading

import numpy as np
import scipy.special

BACKENDS = ("numpy", "cupy")

_cupy = None  # the cupy module, once imported successfully
_current = np
_generators = {}  # module name -> its random Generator


def _import_cupy():
    """Import CuPy and make sure a GPU is visible, or raise one clear error."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "backend 'cupy' was requested but CuPy is not installed; "
            "install it with `pip install -e .[gpu]` (or the cupy-cudaXXx wheel for your CUDA) "
            "or use backend 'numpy'"
        ) from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise RuntimeError(f"backend 'cupy' was requested but no GPU is usable: {e}") from e
    if count == 0:
        raise RuntimeError("backend 'cupy' was requested but no GPU is visible")
    _cupy = cupy
    return cupy


def cupy_available():
    """True when CuPy is installed and a GPU is visible."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def use(name):
    """Make `name` ("numpy" or "cupy") the current backend and return its array module."""
    global _current
    _current = use_module(name)
    return _current


def xp():
    """The current backend's array module (numpy or cupy)."""
    return _current


def name():
    """The current backend's name: "numpy" or "cupy"."""
    return _current.__name__


def array_module(*arrays):
    """The array module the given arrays live on (numpy unless one is a CuPy array)."""
    for a in arrays:
        if _cupy is not None and isinstance(a, _cupy.ndarray):
            return _cupy
    return np


def module_name(a):
    """'cupy' for a CuPy array, 'numpy' for anything else."""
    return array_module(a).__name__


def to_device(a, backend=None):
    """Copy `a` (NumPy, CuPy or a Python sequence) onto `backend` (default: the current one)."""
    target = _current if backend is None else use_module(backend)
    if target is np:
        return to_numpy(a)
    return target.asarray(a)


def to_numpy(a):
    """`a` as a NumPy array (copied from the GPU when it lives there)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def use_module(name):
    """The array module for a backend name, without making it current."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return np if name == "numpy" else _import_cupy()


def erf(x, out=None):
    """The error function, elementwise, on x's own backend and dtype.

    float32 on NumPy uses formula 7.1.26 of Abramowitz & Stegun (absolute error below 1.5e-7,
    about float32's resolution near 1; PyTorch's CPU erf uses the same formula), because SciPy
    evaluates float32 through its scalar float64 routine, several times slower than these SIMD
    passes. float64 (gradient checks) and CuPy use the library's erf.
    """
    if array_module(x) is not np:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x, out=out) if out is not None else cupyx.scipy.special.erf(x)
    if x.dtype != np.float32:
        return scipy.special.erf(x, out=out)
    # erf(x) = sign(x) (1 - (a1 t + a2 t² + ... + a5 t⁵) exp(-x²)),  t = 1 / (1 + p|x|)
    out = np.empty_like(x) if out is None else out
    a = np.abs(x)
    t = a * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    np.multiply(t, _ERF_A[0], out=out)
    for coefficient in _ERF_A[1:]:  # Horner: ((a5 t + a4) t + ...) t
        out += coefficient
        out *= t
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    out *= a
    np.subtract(1.0, out, out=out)
    return np.copysign(out, x, out=out)


_ERF_P = np.float32(0.3275911)
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 ... a1


# -- row blocks on every core --------------------------------------------------------------------

_BLOCK_BYTES = 1 << 19  # a block's rows should stay in cache across an op's passes
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_threads = int(os.environ.get("MINIVIT_THREADS", _cores))
_pool = None


def set_threads(count):
    """How many threads `map_blocks` uses on NumPy (default: MINIVIT_THREADS or all cores)."""
    global _threads, _pool
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    _threads, _pool = count, None


def map_blocks(kernel, rows, row_bytes, module=np):
    """Call kernel(slice) for consecutive blocks of rows covering range(rows).

    Row-wise ops (GELU, LayerNorm, softmax, the attention core) make several passes over big
    arrays. On NumPy, cutting the rows into blocks of ~512 KiB keeps each block in cache across
    the passes, and since NumPy releases the GIL inside ufuncs and BLAS calls, blocks run on all
    cores at once. Kernels must write only their own rows. On CuPy (`module`) the GPU is the
    parallel machine, and inside a kernel the cores are already busy: one call covers every row.
    """
    if module is not np or rows == 0 or threading.current_thread().name.startswith("minivit"):
        kernel(slice(0, rows))
        return
    step = max(1, _BLOCK_BYTES // max(1, row_bytes))
    blocks = [slice(i, min(i + step, rows)) for i in range(0, rows, step)]
    if _threads == 1 or len(blocks) == 1:  # small arrays are not worth a thread hand-off
        for block in blocks:
            kernel(block)
        return
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(_threads, thread_name_prefix="minivit")
    for future in [_pool.submit(kernel, block) for block in blocks]:
        future.result()  # re-raises a kernel's exception here


def rng(module=None):
    """The random Generator of an array module (default: the current backend).

    Dropout, augmentation and initialisation draw from it, so `seed()` makes a run repeat.
    """
    module = _current if module is None else module
    key = module.__name__
    if key not in _generators:
        _generators[key] = module.random.default_rng(0)
    return _generators[key]


def seed(value):
    """Seed the generators of NumPy and (when loaded) CuPy."""
    _generators["numpy"] = np.random.default_rng(value)
    if _cupy is not None:
        _generators["cupy"] = _cupy.random.default_rng(value)


use(os.environ.get("MINIVIT_BACKEND", "numpy"))
