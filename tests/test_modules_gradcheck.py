"""Every Module's backward, and the whole ViT's, against central differences in float64."""

import numpy as np
import pytest
from helpers import assert_close

from minivit import ViT, backend, nn, ops
from minivit.gradcheck import check_module, numerical_gradient, relative_error
from minivit.models.resnet import Bottleneck, ResNet

pytestmark = pytest.mark.usefixtures("op_path")  # the plain ops and the CPU kernels alike


def randomize(module, seed=0, scale=0.5):
    """Random values in every parameter, so no weight is a special 0 or 1 that hides a bug."""
    rng = np.random.default_rng(seed)
    module.to(dtype=np.float64)
    for p in module.parameters():
        p.data[...] = backend.array_module(p.data).asarray(rng.standard_normal(p.shape) * scale)
    return module


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(5, 3), (2, 4, 5)),
        (lambda: nn.Linear(4, 1, bias=False), (1, 4)),
        (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 5, 5, 2)),
        (lambda: nn.LayerNorm(6), (3, 6)),
        (lambda: nn.GELU(), (2, 5)),
        (lambda: nn.GELU(approximate=True), (2, 5)),
        (lambda: nn.Dropout(0.3), (4, 6)),
        (lambda: nn.PatchDropout(0.5), (3, 7, 4)),
        (lambda: nn.MultiHeadAttention(6, 3), (2, 5, 6)),
        (lambda: nn.MultiHeadAttention(4, 1, causal=True), (1, 3, 4)),
        (lambda: nn.MultiHeadAttention(8, 2, dropout=0.2, causal=True), (2, 7, 8)),
        (lambda: nn.MLP(4, 7), (2, 3, 4)),
        (lambda: nn.Block(6, 2, 10), (2, 5, 6)),
        (lambda: nn.Block(6, 3, 5, dropout=0.1, causal=True), (1, 4, 6)),
        (lambda: nn.GroupNorm(6, 3), (2, 3, 3, 6)),
        (lambda: nn.StdConv2d(2, 3, 3, stride=2, padding=1), (2, 5, 5, 2)),
        (lambda: nn.ReLU(), (2, 5)),
        (lambda: Bottleneck(4, 12, 2, 1), (2, 4, 4, 4)),  # mid 3: a standardised filter of 2 weights is always ±1
        (lambda: Bottleneck(12, 12, 1, 3), (1, 3, 3, 12)),
    ],
    ids=["linear", "linear-nobias", "conv2d", "layernorm", "gelu", "gelu-tanh", "dropout", "patch-dropout", "msa",
         "msa-causal-1head", "msa-dropout", "mlp", "block", "block-causal-dropout", "groupnorm", "std-conv2d", "relu",
         "bottleneck-projection", "bottleneck-identity"],
)
def test_module(rand, make, shape):
    module = randomize(make())
    assert_close(check_module(module, rand(*shape)))


def test_embedding_module(xp):
    emb = randomize(nn.Embedding(5, 3))
    ids = xp.asarray([[0, 4, 4], [2, 0, 1]])
    out = emb(ids)
    dout = xp.asarray(np.random.default_rng(0).standard_normal(out.shape))
    emb.zero_grad()
    assert emb.backward(dout) is None
    numeric = numerical_gradient(lambda: emb.forward(ids), emb.weight.data, dout)
    assert_close([relative_error(emb.weight.grad, numeric)])


TINY = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=12)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("dropout, patch_dropout, stem", [(0.0, 0.0, 0), (0.1, 0.0, 0), (0.0, 0.5, 0), (0.0, 0.5, 1)],
                         ids=["plain", "dropout", "patch-dropout", "hybrid"])  # fmt: skip
def test_vit_end_to_end_through_the_loss(xp, rand, pool, dropout, patch_dropout, stem):
    """Every parameter (class token, position embedding and the hybrid's stem included) and the
    images, through the cross-entropy loss with label smoothing."""
    config = dict(TINY, patch_size=TINY["patch_size"] >> stem)  # the same 4 tokens from the stem's feature map
    model = randomize(ViT(**config, pool=pool, dropout=dropout, patch_dropout=patch_dropout, stem=stem))
    images = rand(2, 8, 8, 3)
    labels = xp.asarray([0, 2])

    def logits():
        backend.seed(0)  # the same dropout masks and kept patches on every evaluation
        return model.forward(images)

    def loss():
        return ops.cross_entropy_forward(logits(), labels, label_smoothing=0.1)[0]

    names = [name for name, _ in model.named_parameters()]
    assert ("cls_token" in names) == (pool == "cls") and "pos_embed" in names
    assert ("stem.0.weight" in names) == (stem > 0)

    _, cache = ops.cross_entropy_forward(logits(), labels, label_smoothing=0.1)
    model.zero_grad()
    dimages = model.backward(ops.cross_entropy_backward(cache))
    errors = {"images": relative_error(dimages, numerical_gradient(loss, images))}
    for name, p in model.named_parameters():
        errors[name] = relative_error(p.grad, numerical_gradient(loss, p.data))
    assert_close(errors)


def gradient_errors(model, images, labels):
    """The relative error of the images' gradient and every parameter's, through the cross-entropy loss."""

    def loss():
        return ops.cross_entropy_forward(model.forward(images), labels)[0]

    _, cache = ops.cross_entropy_forward(model(images), labels)
    model.zero_grad()
    dimages = model.backward(ops.cross_entropy_backward(cache))
    errors = {"images": relative_error(dimages, numerical_gradient(loss, images))}
    for name, p in model.named_parameters():
        errors[name] = relative_error(p.grad, numerical_gradient(loss, p.data))
    return errors


def test_resnet_end_to_end_through_the_loss(xp, rand):
    """Every parameter of a two-stage ResNet (root, both units' norms and standardised convolutions, the
    projection shortcut, the head) and the images, through the cross-entropy loss."""
    model = randomize(ResNet(image_size=8, num_classes=3, width=4, blocks=(1, 1), groups=2))
    images, labels = rand(2, 8, 8, 3), xp.asarray([0, 2])
    errors = gradient_errors(model, images, labels)
    assert "units.1.shortcut.weight" in errors and "units.0.shortcut.weight" in errors  # 4 -> 16 channels, then 16 -> 32
    assert_close(errors)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize(
    "kind, place",
    [("none", "input"), ("2d", "input"), ("1d", "every-layer"), ("1d", "every-layer-shared"), ("2d", "every-layer"),
     ("2d", "every-layer-shared"), ("relative", "input")],
)  # fmt: skip
def test_vit_position_embedding_variants_through_the_loss(xp, rand, pool, kind, place):
    """Appendix D.4's position embeddings, every kind and place, on a 3×3 grid (rows and columns differ)."""
    model = randomize(ViT(**dict(TINY, image_size=12), pool=pool, pos_embed=kind, pos_place=place))
    images, labels = rand(2, 12, 12, 3), xp.asarray([0, 2])
    errors = gradient_errors(model, images, labels)
    expected = {"none": set(), "1d": {"pos_embed"}, "2d": {"pos_row", "pos_col"}, "relative": set()}[kind]
    assert {name for name in errors if name.startswith("pos_")} == expected
    assert ("blocks.1.attn.rel" in errors) == (kind == "relative")
    assert_close(errors)
