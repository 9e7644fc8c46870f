"""The CPU kernels (minivit/kernels) against the plain ops they stand in for.

Each kernel must give its op's result (float64 to 1e-12, float32 to 1e-6 relative), on the gradient
checks' shapes and on training shapes, and must accept its op's cache and leave one its op accepts.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.special

from minivit import kernels, ops
from minivit.gradcheck import relative_error
from minivit.kernels import blocks

# float32: ~1e-6; sums over the 8,320 rows of a training batch (LayerNorm's dγ) round to about that.
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-6}

# (name, forward op, backward op, input shapes, keyword arguments); the first input is x.
MINI = dict(b=128, t=65, d=128, heads=4, mlp=256)  # the mini preset's block at the recipes' batch


def attention_inputs(b, t, d):
    return [(b, t, d), (d, 3 * d), (3 * d,), (d, d), (d,)]


CASES = [
    ("gelu", ops.gelu_forward, ops.gelu_backward, [(2, 3, 5)], {}),
    ("gelu tanh", ops.gelu_forward, ops.gelu_backward, [(3, 7)], {"approximate": True}),
    ("gelu mlp", ops.gelu_forward, ops.gelu_backward, [(MINI["b"], MINI["t"], MINI["mlp"])], {}),
    ("layernorm", ops.layernorm_forward, ops.layernorm_backward, [(2, 3, 5), (5,), (5,)], {}),
    ("layernorm 1 row", ops.layernorm_forward, ops.layernorm_backward, [(1, 3), (3,), (3,)], {}),
    ("layernorm mini", ops.layernorm_forward, ops.layernorm_backward,
     [(MINI["b"], MINI["t"], MINI["d"]), (MINI["d"],), (MINI["d"],)], {}),
    ("softmax", ops.softmax_forward, ops.softmax_backward, [(3, 7)], {}),
    ("softmax axis 0", ops.softmax_forward, ops.softmax_backward, [(3, 7)], {"axis": 0}),
    ("softmax axis 1", ops.softmax_forward, ops.softmax_backward, [(2, 3, 5)], {"axis": 1}),
    ("softmax scores", ops.softmax_forward, ops.softmax_backward, [(MINI["b"], MINI["heads"], MINI["t"], MINI["t"])],
     {}),
    ("attention", ops.attention_forward, ops.attention_backward, attention_inputs(2, 5, 6), {"num_heads": 3}),
    ("attention causal 1 token", ops.attention_forward, ops.attention_backward, attention_inputs(1, 1, 4),
     {"num_heads": 1, "causal": True}),
    ("attention causal", ops.attention_forward, ops.attention_backward, attention_inputs(2, 7, 8),
     {"num_heads": 2, "causal": True}),
    ("attention mini", ops.attention_forward, ops.attention_backward,
     attention_inputs(MINI["b"], MINI["t"], MINI["d"]), {"num_heads": MINI["heads"]}),
    ("attention mini causal", ops.attention_forward, ops.attention_backward,
     attention_inputs(MINI["b"], MINI["t"], MINI["d"]), {"num_heads": MINI["heads"], "causal": True}),
    ("attention igpt causal", ops.attention_forward, ops.attention_backward,  # the cpu preset's 256 tokens
     attention_inputs(4, 256, 128), {"num_heads": 4, "causal": True}),
]  # fmt: skip


def arrays(tree):
    """The arrays in an op's output or cache (nested tuples), in order; other entries left out."""
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, tuple):
        return [a for item in tree for a in arrays(item)]
    return []


def switched(function, enabled):
    """function, run with the kernels turned on (True) or off."""

    def run(*args, **kwargs):
        before = kernels.enabled()
        kernels.set_enabled(enabled)
        try:
            return function(*args, **kwargs)
        finally:
            kernels.set_enabled(before)

    return run


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, forward, backward, shapes, kwargs", CASES, ids=[c[0] for c in CASES])
def test_kernel_equals_its_op(name, forward, backward, shapes, kwargs, dtype):
    rng = np.random.default_rng(0)
    scale = [1.0] + [0.2] * (len(shapes) - 1)  # weights small enough that attention is not one-hot
    inputs = [(rng.standard_normal(s) * c).astype(dtype) for s, c in zip(shapes, scale, strict=True)]
    if hasattr(forward, "kernel"):
        plain = (forward.__wrapped__, backward.__wrapped__)
        fast = (forward.kernel, backward.kernel)
    else:  # attention: its core (ops.attention_core and its backward) has the kernel; the op with it off and on
        plain = (switched(forward, False), switched(backward, False))
        fast = (switched(forward, True), switched(backward, True))

    out, cache = plain[0](*inputs, **kwargs)
    out_fast, cache_fast = fast[0](*inputs, **kwargs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    tol = TOLERANCE[dtype]
    assert out_fast.dtype == out.dtype and out_fast.shape == out.shape
    assert relative_error(out_fast, out) < tol, f"{name}: forward"

    caches = arrays(cache), arrays(cache_fast)
    assert [(a.shape, a.dtype) for a in caches[0]] == [(a.shape, a.dtype) for a in caches[1]], f"{name}: cache"
    for i, (a, b) in enumerate(zip(*caches, strict=True)):
        assert relative_error(b, a) < tol, f"{name}: cache entry {i}"

    expected = arrays(plain[1](dout, cache))
    for label, grads in (("kernel", fast[1](dout, cache_fast)), ("kernel on the op's cache", fast[1](dout, cache)),
                         ("op on the kernel's cache", plain[1](dout, cache_fast))):  # fmt: skip
        grads = arrays(grads)
        assert len(grads) == len(expected)
        for i, (a, b) in enumerate(zip(grads, expected, strict=True)):
            assert a.dtype == b.dtype and a.shape == b.shape, f"{name}, {label}: gradient {i}"
            assert relative_error(a, b) < tol, f"{name}, {label}: gradient {i}, relative error {relative_error(a, b):.2e}"


def test_switch_chooses_the_path(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "_enabled", True)
    x = np.ones((2, 3))
    kernel, plain = ops.softmax_forward.kernel, ops.softmax_forward.__wrapped__
    monkeypatch.setattr(ops.softmax_forward, "kernel", lambda *a, **k: calls.append("kernel") or kernel(*a, **k))
    monkeypatch.setattr(ops.softmax_forward, "__wrapped__", lambda *a, **k: calls.append("plain") or plain(*a, **k))
    ops.softmax_forward(x)
    kernels.set_enabled(False)
    assert not kernels.enabled()
    ops.softmax_forward(x)
    kernels.set_enabled(True)
    ops.softmax_forward(x)
    assert calls == ["kernel", "plain", "kernel"]


def test_a_kernel_leaves_what_it_does_not_handle_to_its_op(monkeypatch):
    """Relative attention (a bias on the scores): the attention kernels return NotImplemented, and the
    op's plain core runs, forward and backward, with the same result as with the kernels off."""
    rng = np.random.default_rng(0)
    b, t, d = 2, 5, 8
    inputs = [rng.standard_normal(s) for s in ((b, t, d), (d, 3 * d), (3 * d,), (d, d), (d,))]
    rel = rng.standard_normal((2 * t - 1, d))
    dout = rng.standard_normal((b, t, d))
    plain = []
    for op in (ops.attention_core, ops.attention_core_backward):
        real = op.__wrapped__
        monkeypatch.setattr(op, "__wrapped__", lambda *a, real=real, **k: plain.append(real.__name__) or real(*a, **k))
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", enabled)
        out, cache = ops.attention_forward(*inputs, num_heads=2, causal=True, rel=rel)
        results[enabled] = [out, *ops.attention_backward(dout, cache)]
    assert plain == ["attention_core", "attention_core_backward"] * 2
    assert len(results[True]) == 7  # out, then dx, dw_qkv, db_qkv, dw_out, db_out, drel
    for i, (kernel, op) in enumerate(zip(results[True], results[False], strict=True)):
        assert relative_error(kernel, op) < TOLERANCE[np.float64], f"output {i}"


def test_environment_variable_turns_the_kernels_off():
    code = "import minivit; print(minivit.kernels.enabled())"
    for value, expected in (("0", "False"), ("1", "True")):
        env = {**os.environ, "MINIVIT_KERNELS": value}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected, f"MINIVIT_KERNELS={value}"


def test_float32_erf_is_accurate_to_float32():
    x = np.linspace(-8, 8, 200001)
    fast = kernels.gelu.erf(x.astype(np.float32))
    assert fast.dtype == np.float32
    assert np.abs(fast - scipy.special.erf(x)).max() < 1e-6  # the formula's 1.5e-7, plus float32 arithmetic (5.3e-7)
    assert np.array_equal(kernels.gelu.erf(x), scipy.special.erf(x))  # float64 is SciPy's


@pytest.mark.parametrize("threads", [2, 3])
def test_row_blocks_give_the_same_result_as_one_block(monkeypatch, threads):
    """Cut into many small blocks on several threads, every kernel computes what it computes in
    one piece: kernels write only their own rows, and every row is covered. Only LayerNorm's dγ and
    dβ, sums over all rows added block by block, round differently; they still repeat bit for bit
    whatever the number of threads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 12)).astype(np.float32)
    d = rng.standard_normal((5, 7, 12)).astype(np.float32)
    w = [rng.standard_normal(s).astype(np.float32) for s in ((12, 36), (36,), (12, 12), (12,))]
    k = kernels
    qkv = ops.attention_forward(x, *w, num_heads=3)[1].qkv  # (3, 5, 3, 7, 4): q, k, v per head

    def attention_core(qkv):
        attn, heads = k.attention.attention_core(qkv, causal=True)
        return heads, ops.AttentionCache(qkv, attn, qkv.shape[-1] ** -0.5, None, None)

    def run_all():
        results = {}
        for name, fwd, bwd, args in (
            ("gelu", k.gelu.gelu_forward, k.gelu.gelu_backward, (x,)),
            ("gelu tanh", lambda a: k.gelu.gelu_forward(a, approximate=True), k.gelu.gelu_backward, (x,)),
            ("layernorm", k.layernorm.layernorm_forward, k.layernorm.layernorm_backward, (x, w[1][:12], w[3])),
            ("softmax", k.softmax.softmax_forward, k.softmax.softmax_backward, (x,)),
            ("softmax axis 1", lambda a: k.softmax.softmax_forward(a, axis=1), k.softmax.softmax_backward, (x,)),
            ("attention", attention_core, lambda dout, cache: k.attention.attention_core_backward(dout, cache)[0],
             (qkv,)),
        ):  # fmt: skip
            out, cache = fwd(*args)
            grads = bwd(d, cache)
            for i, value in enumerate([out, *(grads if isinstance(grads, tuple) else (grads,))]):
                results[f"{name} {i}"] = value  # 0: the output, then the backward's gradients in order
        return results

    whole = run_all()
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 100)  # blocks of two LayerNorm / softmax rows, one image
    monkeypatch.setattr(blocks, "_pool", None)
    monkeypatch.setattr(blocks, "_threads", 1)
    one_thread = run_all()
    monkeypatch.setattr(blocks, "_threads", threads)
    blocked = run_all()
    summed_by_block = {"layernorm 2", "layernorm 3"}  # dγ, dβ
    for name, value in blocked.items():
        np.testing.assert_array_equal(value, one_thread[name], err_msg=name)
        if name in summed_by_block:
            np.testing.assert_allclose(value, whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(value, whole[name], err_msg=name)
