"""Backend choice, moving arrays and models, seeding, and NumPy/CuPy agreement."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minivit import ViT, backend, ops

needs_gpu = pytest.mark.skipif(not backend.cupy_available(), reason="CuPy is not installed or no GPU is visible")
SMALL = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=8)


def test_default_is_numpy():
    assert backend.name() == "numpy" and backend.xp() is np


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy'\), got 'torch'"):
        backend.use("torch")


@pytest.mark.skipif(backend.cupy_available(), reason="this machine has a GPU; the error path needs one without")
def test_cupy_missing_is_one_clear_error():
    with pytest.raises(RuntimeError, match="backend 'cupy' was requested but (CuPy is not installed|no GPU)"):
        backend.use("cupy")
    assert backend.name() == "numpy"  # a failed switch changes nothing


def test_environment_variable_chooses_the_backend():
    env = {**os.environ, "MINIVIT_BACKEND": "bogus"}
    result = subprocess.run([sys.executable, "-c", "import minivit"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "backend must be one of" in result.stderr
    env["MINIVIT_BACKEND"] = "numpy"
    result = subprocess.run(
        [sys.executable, "-c", "import minivit; print(minivit.backend.name())"], env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "numpy"


def test_seed_repeats_initialisation_and_dropout():
    def run():
        backend.seed(5)
        model = ViT(**SMALL, dropout=0.5)
        return model(np.ones((2, 8, 8, 3), dtype=np.float32))

    np.testing.assert_array_equal(run(), run())


def test_ops_follow_their_inputs_backend(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 4)))
    out, _ = ops.gelu_forward(x)
    assert backend.array_module(out) is xp
    np.testing.assert_array_equal(backend.to_numpy(backend.to_device(backend.to_numpy(x))), backend.to_numpy(x))


@needs_gpu
def test_model_moves_between_backends_and_agrees_in_float32():
    """The same float32 model on NumPy and on CuPy: logits, input and parameter gradients agree."""
    backend.seed(0)
    cpu = ViT(**SMALL)
    gpu = ViT(**SMALL).load_state_dict(cpu.state_dict()).to("cupy")
    assert gpu.backend == "cupy" and cpu.backend == "numpy"
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 0])
    results = []
    for model, move in ((cpu, backend.to_numpy), (gpu, lambda a: backend.to_device(a, "cupy"))):
        logits = model(move(images))
        _, cache = ops.cross_entropy_forward(logits, move(labels))
        dimages = model.backward(ops.cross_entropy_backward(cache))
        grads = {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}
        results.append((backend.to_numpy(logits), backend.to_numpy(dimages), grads))
    (l1, d1, g1), (l2, d2, g2) = results
    np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d2, d1, rtol=1e-3, atol=1e-6)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-3, atol=1e-6, err_msg=name)


@needs_gpu
def test_numpy_input_to_cupy_model_is_a_clear_error():
    model = ViT(**SMALL).to("cupy")
    with pytest.raises(ValueError, match="has its parameters on cupy but got a numpy input"):
        model(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_each_cupy_test_runs_once_on_the_plain_path():
    """CuPy always runs the plain ops, so conftest drops a CuPy test's "kernels" twin (the same
    computation again, on scarce GPU time); on NumPy both paths stay."""
    folder = os.path.dirname(__file__)
    listing = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              os.path.join(folder, "test_ops_gradcheck.py")],
                             capture_output=True, text=True, cwd=os.path.dirname(folder), timeout=120)  # fmt: skip
    params = [line.split("[", 1)[1].rstrip("]").split("-") for line in listing.stdout.splitlines() if "[" in line]
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert any({"plain", "cupy"} <= set(p) for p in params) and any({"kernels", "numpy"} <= set(p) for p in params)
    assert not any({"kernels", "cupy"} <= set(p) for p in params)
