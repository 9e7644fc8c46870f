"""The basic Modules: each wraps one op pair from minivit.ops and owns its parameters."""

import numpy as np

from .. import ops
from .module import Module, new_parameter, trunc_normal


class Linear(Module):
    """y = x W + b, W: (in_features, out_features), weights ~ truncated N(0, 0.02²), b = 0."""

    def __init__(self, in_features, out_features, bias=True):
        self.weight = new_parameter(trunc_normal((in_features, out_features)))
        self.bias = new_parameter(np.zeros(out_features), decay=False) if bias else None

    def forward(self, x):
        """x: (..., in_features) -> (..., out_features)"""
        out, self._cache = ops.linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        return out

    def backward(self, dout):
        dx, dw, db = ops.linear_backward(dout, self._cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx


class Conv2d(Module):
    """NHWC convolution; kernel (k, k, in_channels, out_channels) ~ truncated N(0, 1/(k²·in_channels))
    (LeCun normal, Flax's default for convolutions), b = 0."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        fan_in = kernel_size * kernel_size * in_channels
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.weight = new_parameter(trunc_normal(shape, std=fan_in**-0.5))
        self.bias = new_parameter(np.zeros(out_channels), decay=False)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        """x: (B, H, W, in_channels) -> (B, H', W', out_channels)"""
        out, self._cache = ops.conv2d_forward(x, self.weight.data, self.bias.data, self.stride, self.padding)
        return out

    def backward(self, dout):
        dx, dw, db = ops.conv2d_backward(dout, self._cache)
        self.weight.grad += dw
        self.bias.grad += db
        return dx


class StdConv2d(Module):
    """BiT's convolution: the kernel standardised per output channel before it is applied (weight
    standardisation), no bias (a GroupNorm follows); kernel initialised as Conv2d's."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        fan_in = kernel_size * kernel_size * in_channels
        self.weight = new_parameter(trunc_normal((kernel_size, kernel_size, in_channels, out_channels), std=fan_in**-0.5))
        self.stride, self.padding = stride, padding

    def forward(self, x):
        """x: (B, H, W, in_channels) -> (B, H', W', out_channels)"""
        standardized, self._std_cache = ops.standardize_forward(self.weight.data)
        out, self._cache = ops.conv2d_forward(x, standardized, None, self.stride, self.padding)
        return out

    def backward(self, dout):
        dx, dw, _ = ops.conv2d_backward(dout, self._cache)
        self.weight.grad += ops.standardize_backward(dw, self._std_cache)
        return dx


class GroupNorm(Module):
    """Normalise each image's groups of channels (channels-last maps), then scale by γ (ones) and shift by β."""

    def __init__(self, channels, groups, eps=1e-5):
        self.weight = new_parameter(np.ones(channels), decay=False)
        self.bias = new_parameter(np.zeros(channels), decay=False)
        self.groups, self.eps = groups, eps

    def forward(self, x):
        """x: (B, H, W, C) -> (B, H, W, C)"""
        out, self._cache = ops.groupnorm_forward(x, self.weight.data, self.bias.data, self.groups, self.eps)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = ops.groupnorm_backward(dout, self._cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx


class ReLU(Module):
    def forward(self, x):
        out, self._cache = ops.relu_forward(x)
        return out

    def backward(self, dout):
        return ops.relu_backward(dout, self._cache)


class LayerNorm(Module):
    """Normalise the last axis, then scale by γ (ones) and shift by β (zeros)."""

    def __init__(self, dim, eps=1e-6):
        self.weight = new_parameter(np.ones(dim), decay=False)
        self.bias = new_parameter(np.zeros(dim), decay=False)
        self.eps = eps

    def forward(self, x):
        """x: (..., dim) -> (..., dim)"""
        out, self._cache = ops.layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = ops.layernorm_backward(dout, self._cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx


class GELU(Module):
    def __init__(self, approximate=False):
        self.approximate = approximate

    def forward(self, x):
        out, self._cache = ops.gelu_forward(x, self.approximate)
        return out

    def backward(self, dout):
        return ops.gelu_backward(dout, self._cache)


class Dropout(Module):
    """Zero each element with probability p while training; the identity in eval()."""

    def __init__(self, p=0.0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        out, self._cache = ops.dropout_forward(x, self.p, self.training)
        return out

    def backward(self, dout):
        return ops.dropout_backward(dout, self._cache)


class PatchDropout(Module):
    """Keep a random share 1 - p of each image's patch tokens while training (the first
    `num_prefix`, the class token, always); the identity in eval()."""

    def __init__(self, p=0.0, num_prefix=1):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"patch dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.num_prefix = num_prefix

    def forward(self, x):
        """x: (B, T, D) -> (B, num_prefix + K, D), K of the T - num_prefix patch tokens"""
        out, self._cache = ops.patch_dropout_forward(x, self.p, self.training, num_prefix=self.num_prefix)
        return out

    def backward(self, dout):
        return ops.patch_dropout_backward(dout, self._cache)


class Embedding(Module):
    """A (num_embeddings, dim) table looked up by integer ids."""

    def __init__(self, num_embeddings, dim):
        self.weight = new_parameter(trunc_normal((num_embeddings, dim)))

    def forward(self, ids):
        """ids: integer (...) -> (..., dim)"""
        out, self._cache = ops.embedding_forward(ids, self.weight.data)
        return out

    def backward(self, dout):
        """Fills the table's gradient; ids have no gradient, so returns None."""
        self.weight.grad += ops.embedding_backward(dout, self._cache)
        return None
