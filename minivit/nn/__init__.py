"""Modules: own Parameters, call ops, keep the cache between forward and backward."""

from .layers import GELU, Conv2d, Dropout, Embedding, GroupNorm, LayerNorm, Linear, PatchDropout, ReLU, StdConv2d
from .module import Module, Parameter, new_parameter, trunc_normal
from .transformer import MLP, Block, MultiHeadAttention

__all__ = [
    "GELU", "Block", "Conv2d", "Dropout", "Embedding", "GroupNorm", "LayerNorm", "Linear", "MLP", "Module",
    "MultiHeadAttention", "Parameter", "PatchDropout", "ReLU", "StdConv2d", "new_parameter", "trunc_normal",
]
