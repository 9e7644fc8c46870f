"""CPU kernels: faster versions of a few ops, with the same signature, cache and result.

The ops in minivit/ops are the plain math: what a student reads beside the paper, and the reference
every gradient check and the PyTorch oracle test. On NumPy, four of them (GELU, LayerNorm, softmax
and the attention core) make several elementwise passes over arrays too big for the cache, one
core at a time. Each has a kernel here that computes the same thing faster: row blocks that stay in
cache run on every core at once (blocks.py), the passes write in place instead of allocating, and
float32 GELU uses a SIMD-friendly erf. tests/test_kernels.py checks every kernel against its op.

An op opts in with a decorator; nothing else in the package knows two versions exist:

    @accelerated(kernels.layernorm.layernorm_forward)
    def layernorm_forward(x, gamma, beta, eps=1e-6):
        ...the plain math...

The kernel runs when the switch is on (the default) and the op's first argument is a NumPy array;
a kernel returns NotImplemented for inputs it does not handle, and the op runs instead. CuPy always
runs the plain op (the GPU is the parallel machine). The kernels import nothing from the ops (an op
hands its kernel the arrays and the cache it needs), so they sit below them. Turn the kernels off
with MINIVIT_KERNELS=0 in the environment or `minivit.kernels.set_enabled(False)`: the model then
computes with exactly the code a student reads, a little slower.
"""

import functools
import os

import numpy as np

_enabled = os.environ.get("MINIVIT_KERNELS", "1") != "0"
accelerated_ops = []  # the ops a kernel stands in for, as they are decorated


def enabled():
    """True when the CPU kernels stand in for their ops on NumPy arrays."""
    return _enabled


def set_enabled(flag):
    """Turn the CPU kernels on (True, the default) or off (False: every op runs its plain math)."""
    global _enabled
    _enabled = bool(flag)


def accelerated(kernel):
    """Decorator: run `kernel` instead of the op on NumPy inputs while the kernels are enabled."""

    def wrap(op):
        @functools.wraps(op)  # so `ops.foo??` shows the plain op's source
        def dispatch(*args, **kwargs):
            if _enabled and isinstance(args[0], np.ndarray):
                result = dispatch.kernel(*args, **kwargs)
                if result is not NotImplemented:
                    return result
            return dispatch.__wrapped__(*args, **kwargs)

        dispatch.kernel = kernel
        accelerated_ops.append(dispatch)
        return dispatch

    return wrap
