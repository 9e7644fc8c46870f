from pathlib import Path

import numpy as np
import pytest

from minivit import backend, kernels

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


@pytest.fixture(params=["kernels", "plain"] if kernels.accelerated_ops else ["plain"])
def op_path(request):
    """Each test twice: with the CPU kernels standing in for their ops on NumPy, then with the plain ops
    (once, plain, where there are no kernels: a student folder whose kernels were removed with the ops)."""
    previous = kernels.enabled()
    kernels.set_enabled(request.param == "kernels")
    yield request.param
    kernels.set_enabled(previous)


def pytest_collection_modifyitems(config, items):
    """A test on CuPy runs on the plain path only: CuPy always runs the plain ops (the kernels are
    CPU-only), so its "kernels" twin would compute the same thing again, on scarce GPU time."""
    keep, twins = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        (twins if params.get("xp") == "cupy" and params.get("op_path") == "kernels" else keep).append(item)
    if twins:
        config.hook.pytest_deselected(items=twins)
        items[:] = keep


@pytest.fixture
def rand(xp):
    """rand(*shape, scale=1.0, dtype=float64): standard-normal array on the test's backend."""
    rng = np.random.default_rng(1234)

    def make(*shape, scale=1.0, dtype=np.float64):
        return xp.asarray((rng.standard_normal(shape) * scale).astype(dtype))

    return make



REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the repository, or shared/ inside a checkout that carries one
SHARED_CIFAR10 = [REPO.parent / "shared" / "data" / "cifar-10-python.tar.gz",
                  REPO / "shared" / "data" / "cifar-10-python.tar.gz"]  # fmt: skip


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    """(data folder holding its cache, Dataset): the real CIFAR-10 read from shared/data once per session."""
    from minivit.data import load_cifar

    path = next((p for p in SHARED_CIFAR10 if p.is_file()), None)
    if path is None:
        pytest.skip(f"the real CIFAR-10 archive is not here (looked for {', '.join(map(str, SHARED_CIFAR10))})")
    folder = tmp_path_factory.mktemp("data")
    return folder, load_cifar("cifar10", data_dir=folder, source=path)


@pytest.fixture(scope="session")
def cifar_dir(real_cifar10):
    """A data folder holding the cache of the real CIFAR-10."""
    return real_cifar10[0]
