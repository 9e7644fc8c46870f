"""Modules: own Parameters, call ops, keep the cache between forward and backward."""

from .layers import GELU, Conv2d, Dropout, Embedding, LayerNorm, Linear, PatchDropout
from .module import Module, Parameter, new_parameter, trunc_normal
from .transformer import MLP, Block, MultiHeadAttention

__all__ = [
    "GELU", "Block", "Conv2d", "Dropout", "Embedding", "LayerNorm", "Linear", "MLP", "Module",
    "MultiHeadAttention", "Parameter", "PatchDropout", "new_parameter", "trunc_normal",
]
