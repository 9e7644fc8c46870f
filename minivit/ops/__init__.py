"""Pure math, no state: each op is a forward/backward pair.

    out, cache = foo_forward(x, ...)
    dx, d<param>... = foo_backward(dout, cache)

Ops keep the dtype they are given (float32 to train, float64 to check gradients) and run on
whatever backend their inputs live on.
"""

from .attention import (AttentionCache, attention_backward, attention_core, attention_core_backward, attention_decode,
                        attention_forward)  # fmt: skip
from .conv import conv2d_backward, conv2d_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .gelu import gelu_backward, gelu_forward
from .groupnorm import groupnorm_backward, groupnorm_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .losses import cross_entropy_backward, cross_entropy_forward
from .patch_dropout import patch_dropout_backward, patch_dropout_forward
from .patches import patchify, patchify_backward, unpatchify
from .pooling import mean_pool_backward, mean_pool_forward
from .relu import relu_backward, relu_forward
from .softmax import softmax_backward, softmax_forward
from .standardize import standardize_backward, standardize_forward

__all__ = [
    "AttentionCache",
    "attention_backward",
    "attention_core",
    "attention_core_backward",
    "attention_decode",
    "attention_forward",
    "conv2d_backward",
    "conv2d_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dropout_backward",
    "dropout_forward",
    "embedding_backward",
    "embedding_forward",
    "gelu_backward",
    "gelu_forward",
    "groupnorm_backward",
    "groupnorm_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "mean_pool_backward",
    "mean_pool_forward",
    "patch_dropout_backward",
    "patch_dropout_forward",
    "patchify",
    "patchify_backward",
    "relu_backward",
    "relu_forward",
    "softmax_backward",
    "softmax_forward",
    "standardize_backward",
    "standardize_forward",
    "unpatchify",
]
