from pathlib import Path

import numpy as np
import pytest

from minivit import backend

BACKENDS = [
    "numpy",
    pytest.param(
        "cupy",
        marks=pytest.mark.skipif(not backend.cupy_available(), reason="CuPy is not installed or no GPU is visible"),
    ),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module of each backend that can run here (CuPy only where a GPU is)."""
    module = backend.use_module(request.param)
    previous = backend.name()
    backend.use(request.param)  # so modules built in the test live on this backend too
    yield module
    backend.use(previous)


@pytest.fixture
def rand(xp):
    """rand(*shape, scale=1.0, dtype=float64): standard-normal array on the test's backend."""
    rng = np.random.default_rng(1234)

    def make(*shape, scale=1.0, dtype=np.float64):
        return xp.asarray((rng.standard_normal(shape) * scale).astype(dtype))

    return make



SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-python.tar.gz"


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A data folder holding the cache of the real CIFAR-10 (from ../shared/data), built once per session."""
    if not SHARED_CIFAR10.exists():
        pytest.skip(f"the real CIFAR-10 is not at {SHARED_CIFAR10}")
    from minivit.data import load_cifar

    folder = tmp_path_factory.mktemp("data")
    load_cifar("cifar10", data_dir=folder, source=SHARED_CIFAR10)
    return folder
