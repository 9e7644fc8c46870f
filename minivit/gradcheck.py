"""Numerical gradients by central differences, to check hand-written backward passes.

    from minivit.gradcheck import numerical_gradient, relative_error
    out, cache = ops.gelu_forward(x)
    dx = ops.gelu_backward(dout, cache)
    dx_num = numerical_gradient(lambda: ops.gelu_forward(x)[0], x, dout)
    print(relative_error(dx, dx_num))   # ~1e-10 in float64

Work in float64: float32 keeps ~7 digits, so a central difference with h ≈ 1e-3 gives errors
around 1e-3 to 1e-4 even for a correct backward.
"""

import inspect

import numpy as np

from . import backend

TINY = 1e-30


def relative_error(a, b):
    """max|a - b| / max(|a| + |b|), one number for the whole array (0 when both are 0)."""
    a = backend.to_numpy(a).astype(np.float64)
    b = backend.to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a) + np.abs(b))), TINY))


def numerical_gradient(f, x, dout=None, h=1e-6):
    """Central-difference gradient of Σ dout ⊙ f() with respect to the array x.

    f: a function of no arguments that reads x (perturbed in place) and returns an array
       or a scalar
    x: the array to differentiate with respect to (modified during the call, restored after)
    dout: the upstream gradient, same shape as f()'s output (default: 1, for a scalar f)
    returns an array of x's shape:  (Σ dout ⊙ f(x + h e_i) - Σ dout ⊙ f(x - h e_i)) / 2h
    """
    xp = backend.array_module(x)

    def objective():
        out = f()
        return float((out * dout).sum()) if dout is not None else float(out)

    grad = xp.zeros(x.shape, dtype=np.float64)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous x, so that a flat view of it perturbs x")
    flat_x = x.reshape(-1)
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        old = float(flat_x[i])
        flat_x[i] = old + h
        plus = objective()
        flat_x[i] = old - h
        minus = objective()
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def check_module(module, *inputs, seed=0, h=1e-6):
    """Compare a Module's backward with numerical gradients for every input and parameter.

    module: a minivit.nn.Module, in float64 (see Module.to)
    inputs: its forward's floating-point inputs
    seed: the backend is re-seeded before every forward, so dropout draws the same mask
    returns {name: relative error}, with "input0", "input1", ... and each parameter's name

    A random upstream gradient dout checks every output element, not only their sum.
    """
    for name, p in module.named_parameters():
        if p.data.dtype != np.float64:
            raise ValueError(f"check_module needs float64 parameters; {name} is {p.data.dtype} (use module.to(dtype=numpy.float64))")

    def forward():
        backend.seed(seed)
        return module.forward(*inputs)

    out = forward()
    dout = backend.to_device(np.random.default_rng(seed).standard_normal(out.shape), backend.module_name(out))
    module.zero_grad()
    dinputs = module.backward(dout)
    if not isinstance(dinputs, tuple):
        dinputs = (dinputs,)
    errors = {}
    for i, (x, dx) in enumerate(zip(inputs, dinputs)):
        if dx is not None:
            errors[f"input{i}"] = relative_error(dx, numerical_gradient(forward, x, dout, h))
    for name, p in module.named_parameters():
        errors[name] = relative_error(p.grad, numerical_gradient(forward, p.data, dout, h))
    return errors


def check_op(forward, backward, *inputs, seed=0, h=1e-6, **options):
    """Compare an op pair's backward with numerical gradients for each floating-point input.

    forward(*inputs, **options) -> (out, cache);  backward(dout, cache) -> one gradient per
    floating-point input, in order (integer inputs such as embedding ids get none), and None for an
    optional input left out as None (such as a bias).
    returns {gradient name: relative error}, one per floating-point input, named "d" + the forward's
    parameter name (so a failure says which gradient is wrong)

        check_op(ops.layernorm_forward, ops.layernorm_backward, x, gamma, beta)  # {"dx":, "dgamma":, "dbeta":}
        check_op(ops.linear_forward, ops.linear_backward, x, w, None)   # no bias: db must be None
    """
    out, cache = forward(*inputs, **options)
    dout = backend.to_device(np.random.default_rng(seed).standard_normal(out.shape), backend.module_name(out))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    names = list(inspect.signature(forward).parameters)
    slots = [(f"d{names[i]}", x) for i, x in enumerate(inputs) if x is None or x.dtype.kind == "f"]
    if len(grads) != len(slots):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(slots)} floating-point or None inputs")
    for i, ((_, x), grad) in enumerate(zip(slots, grads)):
        if x is None and grad is not None:
            raise ValueError(f"backward returned a gradient for gradient slot {i}, whose input was None")
    return {
        name: relative_error(grad, numerical_gradient(lambda: forward(*inputs, **options)[0], x, dout, h))
        for (name, x), grad in zip(slots, grads)
        if x is not None
    }
