"""Parameter and Module: state, the forward → backward contract, and checkpoints.

A Module's forward(x) keeps what its backward needs; backward(dout) adds every parameter's
gradient into `param.grad` (so call `zero_grad()` between steps) and returns the gradient
with respect to the forward's input.
"""

import numpy as np

from .. import backend
from ..atomic import save_npz


class Parameter:
    """A trainable array and its gradient, on the same backend and dtype.

    decay: whether AdamW's weight decay applies (False for biases, norms, class token and
    position embeddings, as in the reference code).
    """

    def __init__(self, data, decay=True):
        self.data = data
        self.grad = backend.array_module(data).zeros_like(data)
        self.decay = decay

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, on={backend.module_name(self.data)})"


def new_parameter(array, decay=True):
    """A float32 Parameter on the current backend from a NumPy array."""
    return Parameter(backend.to_device(array.astype(np.float32)), decay=decay)


def trunc_normal(shape, std=0.02):
    """Normal(0, std²) truncated to ±2 std, drawn on NumPy so every backend starts alike."""
    rng = backend.rng(np)
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():  # redraw the ~5 % outside the bounds
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


class Module:
    """Base class: parameters are found in attributes (Parameters, Modules and lists of them)."""

    training = True

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *inputs):
        self._check_backend(inputs)
        return self.forward(*inputs)

    # -- traversal ---------------------------------------------------------------------------

    def _members(self):
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, e.g. ("blocks.0.attn.qkv.weight", p), in a fixed order."""
        for name, value in self._members():
            if isinstance(value, Parameter):
                yield prefix + name, value
            else:
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and every submodule, depth first."""
        yield self
        for _, value in self._members():
            if isinstance(value, Module):
                yield from value.modules()

    def num_parameters(self):
        return sum(int(p.data.size) for p in self.parameters())

    # -- modes and gradients -----------------------------------------------------------------

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad.fill(0)

    # -- backend and dtype -------------------------------------------------------------------

    def to(self, backend_name=None, dtype=None):
        """Move every parameter (and its gradient) to a backend and/or cast it to a dtype."""
        for p in self.parameters():
            data = p.data if backend_name is None else backend.to_device(p.data, backend_name)
            if dtype is not None:
                data = data.astype(dtype, copy=False)
            p.data = data
            p.grad = backend.array_module(data).zeros_like(data)
        return self

    @property
    def dtype(self):
        return self.parameters()[0].data.dtype

    @property
    def backend(self):
        """'numpy' or 'cupy': where this module's parameters live."""
        return backend.module_name(self.parameters()[0].data)

    def _check_backend(self, inputs):
        first = next(self.named_parameters(), None)
        if first is None:
            return
        want = backend.module_name(first[1].data)
        for x in inputs:
            if hasattr(x, "__array__") or hasattr(x, "__cuda_array_interface__"):
                got = backend.module_name(x)
                if got != want:
                    raise ValueError(
                        f"{type(self).__name__} has its parameters on {want} but got a {got} input; "
                        f"move the input with minivit.backend.to_device(x, {want!r}) "
                        f"or the model with .to({got!r})"
                    )

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self):
        """{name: NumPy array} copies of every parameter."""
        return {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters, keeping this module's backend and dtype.

        Every name must match and every shape agree; otherwise nothing is changed.
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        extra = sorted(set(state) - set(params))
        if missing or extra:
            raise ValueError(
                "state_dict does not match the model: "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {extra}" if extra else "")
            )
        for name, p in params.items():
            if tuple(state[name].shape) != tuple(p.data.shape):
                raise ValueError(f"state_dict entry {name!r} has shape {tuple(state[name].shape)}, expected {p.data.shape}")
        for name, p in params.items():
            p.data = backend.to_device(state[name], self.backend).astype(p.data.dtype, copy=False)
        return self

    def save(self, path):
        """Write the state_dict to an .npz file atomically (a crash never leaves a half file)."""
        save_npz(path, self.state_dict())

    def load(self, path):
        with np.load(path, allow_pickle=False) as f:
            return self.load_state_dict({k: f[k] for k in f.files})
