"""Which array module minivit computes with: NumPy (CPU) or CuPy (GPU).

This is the only file that imports CuPy. Everything above it takes the array module
from its inputs (`array_module(x)`), so the same ops run on either backend.

    import minivit.backend as backend
    backend.use("cupy")            # or MINIVIT_BACKEND=cupy in the environment
    x = backend.to_device(x_np)    # NumPy -> current backend
    y = backend.to_numpy(x)        # any backend -> NumPy
    backend.seed(0)                # seeds the generators of both backends
"""

import os

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


def erf(x):
    """The error function, elementwise, on x's own backend and dtype (SciPy's or CuPy's)."""
    if array_module(x) is np:
        return scipy.special.erf(x)
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def rng(module=None):
    """The random Generator of an array module (default: the current backend).

    Dropout, augmentation and initialisation draw from it, so `seed()` makes a run repeat.
    """
    module = _current if module is None else module
    key = module.__name__
    if key not in _generators:
        _generators[key] = module.random.default_rng(0)
    return _generators[key]


def set_rng(generator, module=None):
    """Make `generator` the random Generator of an array module (default: the current backend), until
    the next seed(): the loop's way to draw a data-parallel step's masks for the whole batch."""
    _generators[(_current if module is None else module).__name__] = generator


def seed(value):
    """Seed the generators of NumPy and (when loaded) CuPy."""
    _generators["numpy"] = np.random.default_rng(value)
    if _cupy is not None:
        _generators["cupy"] = _cupy.random.default_rng(value)


use(os.environ.get("MINIVIT_BACKEND", "numpy"))
