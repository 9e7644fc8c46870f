"""Optimisers (SGD with momentum, AdamW), the warmup + cosine learning-rate schedule, and
global-norm gradient clipping.

    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for step in range(total):
        opt.lr = warmup_cosine(step, total, warmup=500, base_lr=1e-3)
        ...forward, backward...
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        model.zero_grad()
"""

import math

import numpy as np

from . import backend


class Optimizer:
    """Holds the parameters and per-parameter buffers; `state_dict()` saves them as NumPy arrays."""

    buffer_names = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got no parameters")
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.lr = lr
        self.step_count = 0
        self.buffers = {
            name: [backend.array_module(p.data).zeros_like(p.data) for p in self.params] for name in self.buffer_names
        }

    def zero_grad(self):
        for p in self.params:
            p.grad.fill(0)

    def step(self):
        self.step_count += 1
        for i, p in enumerate(self.params):
            self.update(p, *(self.buffers[name][i] for name in self.buffer_names))

    def update(self, p, *buffers):
        raise NotImplementedError

    def state_dict(self):
        """{"step", "lr", "<buffer>.<i>"}: NumPy arrays, ready for np.savez."""
        state = {"step": np.array(self.step_count), "lr": np.array(self.lr)}
        for name, arrays in self.buffers.items():
            for i, a in enumerate(arrays):
                state[f"{name}.{i}"] = backend.to_numpy(a).copy()
        return state

    def load_state_dict(self, state):
        expected = {"step", "lr"} | {f"{n}.{i}" for n in self.buffer_names for i in range(len(self.params))}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(f"optimizer state does not match: missing {missing}, unexpected {extra}")
        for name in self.buffer_names:
            for i, p in enumerate(self.params):
                if tuple(state[f"{name}.{i}"].shape) != p.data.shape:
                    raise ValueError(
                        f"optimizer state {name}.{i} has shape {tuple(state[f'{name}.{i}'].shape)}, "
                        f"expected {p.data.shape}"
                    )
        for name, arrays in self.buffers.items():
            for i, p in enumerate(self.params):
                arrays[i] = backend.to_device(state[f"{name}.{i}"], backend.module_name(p.data)).astype(p.data.dtype)
        self.step_count = int(state["step"])
        self.lr = float(state["lr"])
        return self


class SGD(Optimizer):
    """v ← μ v + (g + λ θ),  θ ← θ - lr v   (weight decay λ as L2, only on decayed parameters)."""

    buffer_names = ("velocity",)

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.weight_decay = weight_decay

    def update(self, p, velocity):
        velocity *= self.momentum
        velocity += p.grad
        if self.weight_decay and p.decay:
            velocity += self.weight_decay * p.data
        p.data -= self.lr * velocity


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): the decay shrinks θ directly, by
    lr λ θ, instead of entering the gradient as an L2 term (the update rule is in `update`).

    The decay λ θ skips parameters with decay=False: biases, norms, class token, position embeddings.
    """

    buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05):
        super().__init__(params, lr)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

    def update(self, p, m, v):
        """One step on parameter p (its .data and .grad) with its moment buffers m and v, updated in place;
        self.step_count is t (1 at the first step)."""
        b1, b2 = self.betas
        xp = backend.array_module(p.data)
        g = p.grad
        ### BEGIN SOLUTION
        #     m ← β1 m + (1-β1) g,   v ← β2 v + (1-β2) g²
        #     θ ← θ - lr λ θ - lr m̂ / (√v̂ + ε),   m̂ = m / (1-β1ᵗ),  v̂ = v / (1-β2ᵗ)
        # written as in-place steps; lr / (1-β1ᵗ) and 1/√(1-β2ᵗ) are scalars folded in once.
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        if self.weight_decay and p.decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        t = self.step_count
        denom = xp.sqrt(v)
        denom *= 1.0 / math.sqrt(1.0 - b2**t)
        denom += self.eps
        step = m / denom
        step *= self.lr / (1.0 - b1**t)
        p.data -= step
        ### END SOLUTION


def warmup_cosine(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """Learning rate at `step` (0-based): linear from 0 over `warmup_steps`, then a half cosine
    from base_lr down to min_lr at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    returns the norm before clipping (useful to log)
    """
    params = list(params)
    total = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            p.grad *= scale
    return total
