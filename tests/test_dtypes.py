"""float32 in, float32 out: no op, module, model or optimiser upcasts the training path to float64."""

import numpy as np
import pytest

from minivit import ViT, ops
from minivit.optim import SGD, AdamW

F32 = np.float32


def r(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(F32)


OPS = {
    "linear": (ops.linear_forward, ops.linear_backward, (r(2, 3, 4), r(4, 5), r(5)), {}),
    "conv2d": (ops.conv2d_forward, ops.conv2d_backward, (r(2, 6, 6, 3), r(3, 3, 3, 4), r(4)),
               {"stride": 2, "padding": 1}),
    "layernorm": (ops.layernorm_forward, ops.layernorm_backward, (r(2, 3, 4), r(4), r(4)), {}),
    "gelu": (ops.gelu_forward, ops.gelu_backward, (r(2, 3),), {}),
    "gelu-tanh": (ops.gelu_forward, ops.gelu_backward, (r(2, 3),), {"approximate": True}),
    "softmax": (ops.softmax_forward, ops.softmax_backward, (r(2, 3),), {}),
    "attention": (
        ops.attention_forward,
        ops.attention_backward,
        (r(2, 5, 6), r(6, 18), r(18), r(6, 6), r(6)),
        {"num_heads": 3, "causal": True},
    ),
    "dropout": (ops.dropout_forward, ops.dropout_backward, (r(4, 4), 0.5), {}),
    "patch_dropout": (ops.patch_dropout_forward, ops.patch_dropout_backward, (r(2, 9, 4), 0.5), {}),
    "mean_pool": (ops.mean_pool_forward, ops.mean_pool_backward, (r(2, 3, 4),), {}),
}


@pytest.mark.parametrize("name", OPS)
def test_ops_keep_float32(name):
    forward, backward, inputs, options = OPS[name]
    out, cache = forward(*inputs, **options)
    assert out.dtype == F32 and out.shape == forward(*inputs, **options)[0].shape
    grads = backward(np.ones_like(out), cache)
    for g in grads if isinstance(grads, tuple) else (grads,):
        assert g is None or g.dtype == F32


def test_other_ops_keep_float32():
    loss, cache = ops.cross_entropy_forward(r(4, 3), np.array([0, 1, 2, 0]), label_smoothing=0.1)
    assert loss.dtype == F32 and ops.cross_entropy_backward(cache).dtype == F32
    out, cache = ops.embedding_forward(np.array([1, 0, 1]), r(2, 3))
    assert out.dtype == F32 and ops.embedding_backward(out, cache).dtype == F32
    patches = ops.patchify(r(2, 8, 8, 3), 4)
    assert patches.dtype == F32 and ops.unpatchify(patches, 4, 8).dtype == F32


@pytest.mark.parametrize("pool, stem", [("cls", 0), ("mean", 0), ("cls", 1)])
@pytest.mark.parametrize("opt_class", [AdamW, SGD])
def test_model_and_optimizer_keep_float32(pool, stem, opt_class):
    model = ViT(image_size=8, patch_size=4 >> stem, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=8, pool=pool,
                dropout=0.1, stem=stem)  # fmt: skip
    opt = opt_class(model.parameters(), lr=1e-2)
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=F32)
    logits = model(images)
    assert logits.dtype == F32 and logits.shape == (4, 3)
    loss, cache = ops.cross_entropy_forward(logits, np.array([0, 1, 2, 1]))
    dimages = model.backward(ops.cross_entropy_backward(cache))
    assert dimages.dtype == F32 and dimages.shape == images.shape
    opt.step()
    for name, p in model.named_parameters():
        assert p.data.dtype == F32 and p.grad.dtype == F32, name
    assert all(v.dtype == F32 for k, v in opt.state_dict().items() if "." in k)
    assert all(a.dtype == F32 for a in model.attention_maps())
