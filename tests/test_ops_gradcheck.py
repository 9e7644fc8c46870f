"""Every op's hand-written backward against central differences, in float64, on each backend."""

import numpy as np
import pytest
from helpers import assert_close

from minivit import ops
from minivit.gradcheck import check_op, numerical_gradient, relative_error

pytestmark = pytest.mark.usefixtures("op_path")  # the plain ops and the CPU kernels alike


@pytest.mark.parametrize("x_shape, d_out", [((1, 3), 4), ((2, 5, 7), 3), ((3, 1, 2, 6), 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(rand, x_shape, d_out, bias):
    x, w = rand(*x_shape), rand(x_shape[-1], d_out)
    b = rand(d_out) if bias else None  # without a bias, check_op also checks that db is None
    assert_close(check_op(ops.linear_forward, ops.linear_backward, x, w, b))


def test_check_op_refuses_a_gradient_for_an_input_left_out(rand):
    def backward_with_db(dout, cache):  # a backward that forgets the bias was None
        dx, dw, _ = ops.linear_backward(dout, cache)
        return dx, dw, dout.sum(axis=0)

    with pytest.raises(ValueError, match="gradient slot 2, whose input was None"):
        check_op(ops.linear_forward, backward_with_db, rand(2, 3), rand(3, 4), None)


@pytest.mark.parametrize("shape", [(1, 3), (4, 7), (2, 3, 5)])
def test_layernorm(rand, shape):
    d = shape[-1]
    assert_close(check_op(ops.layernorm_forward, ops.layernorm_backward, rand(*shape), rand(d), rand(d)))


@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 3, 5)])
@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "tanh"])
def test_gelu(rand, shape, approximate):
    x = rand(*shape, scale=2.0)  # covers the curved region around 0 and both tails
    assert_close(check_op(ops.gelu_forward, ops.gelu_backward, x, approximate=approximate))


@pytest.mark.parametrize("shape, axis", [((1, 1), -1), ((3, 7), -1), ((3, 7), 0), ((2, 3, 5), 1)])
def test_softmax(rand, shape, axis):
    assert_close(check_op(ops.softmax_forward, ops.softmax_backward, rand(*shape), axis=axis))


@pytest.mark.parametrize(
    "b, t, d, heads",
    [(1, 1, 4, 1), (1, 5, 6, 1), (2, 5, 6, 3), (2, 7, 8, 2), (3, 4, 4, 4)],
)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention(rand, b, t, d, heads, causal):
    inputs = [rand(b, t, d), rand(d, 3 * d, scale=0.5), rand(3 * d), rand(d, d, scale=0.5), rand(d)]
    assert_close(check_op(ops.attention_forward, ops.attention_backward, *inputs, num_heads=heads, causal=causal))


@pytest.mark.parametrize("b, t, d, heads", [(1, 1, 4, 1), (2, 5, 6, 3), (1, 4, 8, 2)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_relative_attention(rand, b, t, d, heads, causal):
    """The relative keys rel (2T - 1, D) too: their gradient is the 6th the backward returns."""
    inputs = [rand(b, t, d), rand(d, 3 * d, scale=0.5), rand(3 * d), rand(d, d, scale=0.5), rand(d)]
    rel = rand(2 * t - 1, d)

    def forward():
        return ops.attention_forward(*inputs, num_heads=heads, causal=causal, rel=rel)[0]

    out, cache = ops.attention_forward(*inputs, num_heads=heads, causal=causal, rel=rel)
    dout = rand(*out.shape)
    grads = ops.attention_backward(dout, cache)
    assert len(grads) == 6 and grads[-1].shape == rel.shape
    assert_close([relative_error(g, numerical_gradient(forward, a, dout)) for g, a in zip(grads, [*inputs, rel])])
    with pytest.raises(ValueError, match="rel must have shape"):
        ops.attention_forward(*inputs, num_heads=heads, rel=rel[1:])


@pytest.mark.parametrize("b, k", [(1, 2), (4, 3), (5, 10)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy(xp, rand, b, k, label_smoothing, soft):
    logits = rand(b, k, scale=3.0)
    rng = np.random.default_rng(0)
    if soft:  # probability targets, as mixup makes
        labels = xp.asarray(rng.dirichlet(np.ones(k), size=b))
    else:
        labels = xp.asarray(rng.integers(0, k, size=b))
    _, cache = ops.cross_entropy_forward(logits, labels, label_smoothing)
    dlogits = ops.cross_entropy_backward(cache)
    numeric = numerical_gradient(lambda: ops.cross_entropy_forward(logits, labels, label_smoothing)[0], logits)
    assert_close([relative_error(dlogits, numeric)])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7])
def test_dropout(xp, rand, p):
    from minivit import backend

    x = rand(4, 9)
    seed = 7

    def forward(x):  # the same mask on every call: a fixed function to differentiate
        return ops.dropout_forward(x, p, train=True, rng=backend.use_module(backend.module_name(x)).random.default_rng(seed))

    assert_close(check_op(forward, ops.dropout_backward, x))


@pytest.mark.parametrize("ids_shape", [(5,), (2, 3), (1, 1)])
def test_embedding(xp, rand, ids_shape):
    ids = xp.asarray(np.random.default_rng(0).integers(0, 4, size=ids_shape))  # 4 ids into 4 rows: repeats
    assert_close(check_op(ops.embedding_forward, ops.embedding_backward, ids, rand(4, 3)))


@pytest.mark.parametrize(
    "x_shape, k, f, stride, padding",
    [((1, 3, 3, 1), 1, 1, 1, 0), ((2, 5, 5, 3), 3, 4, 1, 1), ((2, 8, 8, 2), 3, 3, 2, 1), ((1, 7, 6, 2), 2, 3, 3, 0),
     ((1, 4, 8, 3), 4, 2, 4, 0)],
    ids=["1x1", "same", "stride2", "stride3-ragged", "patches"],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(rand, x_shape, k, f, stride, padding, bias):
    x, w = rand(*x_shape), rand(k, k, x_shape[3], f)
    b = rand(f) if bias else None  # without a bias, check_op also checks that db is None
    assert_close(check_op(ops.conv2d_forward, ops.conv2d_backward, x, w, b, stride=stride, padding=padding))


@pytest.mark.parametrize("shape, groups", [((1, 1, 1, 3), 1), ((2, 3, 3, 4), 2), ((2, 2, 5, 6), 3), ((1, 3, 2, 4), 4)],
                         ids=["one-pixel", "two-groups", "three-groups", "one-channel-each"])  # fmt: skip
def test_groupnorm(rand, shape, groups):
    c = shape[3]
    assert_close(check_op(ops.groupnorm_forward, ops.groupnorm_backward, rand(*shape), rand(c), rand(c),
                          groups=groups))


@pytest.mark.parametrize("shape", [(1, 1, 3, 2), (3, 3, 2, 4), (1, 1, 5, 3)])
def test_standardize(rand, shape):
    """(Two weights a filter would standardise to ±1 whatever they are: a zero gradient, nothing to check.)"""
    assert_close(check_op(ops.standardize_forward, ops.standardize_backward, rand(*shape)))


def test_relu(rand):
    x = rand(3, 7)
    x[0, :3] = [1e-3, -1e-3, 0.5]  # near 0 on both sides, beyond the central differences' step
    assert_close(check_op(ops.relu_forward, ops.relu_backward, x))


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 5, 4)])
def test_mean_pool(rand, shape):
    assert_close(check_op(ops.mean_pool_forward, ops.mean_pool_backward, rand(*shape)))


@pytest.mark.parametrize("shape, p", [((2, 8, 12, 3), 4), ((6, 6, 2), 3), ((1, 4, 4, 1), 1), ((1, 4, 4, 3), 4)])
def test_patchify(rand, shape, p):
    x = rand(*shape)
    patches = ops.patchify(x, p)
    dout = rand(*patches.shape)
    dx = ops.patchify_backward(dout, p, shape[-3:-1])
    assert_close([relative_error(dx, numerical_gradient(lambda: ops.patchify(x, p), x, dout))])


@pytest.mark.parametrize("b, t, p, num_prefix", [(1, 5, 0.5, 1), (3, 9, 0.25, 1), (2, 6, 0.7, 0), (2, 4, 0.0, 1)])
def test_patch_dropout(xp, rand, b, t, p, num_prefix):
    from minivit import backend

    x = rand(b, t, 3)

    def forward(x):  # the same tokens kept on every call: a fixed function to differentiate
        generator = backend.use_module(backend.module_name(x)).random.default_rng(5)
        return ops.patch_dropout_forward(x, p, train=True, rng=generator, num_prefix=num_prefix)

    assert_close(check_op(forward, ops.patch_dropout_backward, x))
