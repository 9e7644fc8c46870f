"""Bad input: each a ValueError whose message names what was expected."""

import numpy as np
import pytest

from minivit import ViT, ops
from minivit.nn import Linear
from minivit.optim import AdamW

SMALL = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8)


@pytest.fixture
def model():
    return ViT(**SMALL)


def images(*shape, dtype=np.float32):
    return np.random.default_rng(0).random(shape).astype(dtype)


def test_image_side_not_divisible_by_patch():
    with pytest.raises(ValueError, match="image 30×32 is not divisible by patch 4"):
        ops.patchify(images(2, 30, 32, 3), 4)
    with pytest.raises(ValueError, match="image 30×30 is not divisible by patch 4"):
        ViT(image_size=30, patch_size=4)


@pytest.mark.parametrize(
    "x, message",
    [
        (images(2, 8, 8, 1), "expected 3 channels"),
        (images(2, 3, 8, 8), "expected 3 channels"),  # NCHW instead of NHWC
        (images(8, 8, 3), r"expected images of shape \(B, H, W, C\)"),
        (images(1, 2, 8, 8, 3), r"expected images of shape \(B, H, W, C\)"),
        (images(2, 12, 12, 3), "expected 8×8 images, got 12×12"),
        ((images(2, 8, 8, 3) * 255).astype(np.uint8), "expected floating-point images, got uint8"),
        (images(2, 8, 8, 3, dtype=np.float64), "expected float32 images"),
    ],
    ids=["channels", "nchw", "rank3", "rank5", "size", "uint8", "float64"],
)
def test_bad_images(model, x, message):
    with pytest.raises(ValueError, match=message):
        model(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_images(model, bad):
    x = images(2, 8, 8, 3)
    x[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(x)


def test_patchify_rank():
    with pytest.raises(ValueError, match=r"expected an image \(H, W, C\) or a batch"):
        ops.patchify(images(8, 8), 4)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]])
def test_labels_out_of_range(labels):
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        ops.cross_entropy_forward(np.zeros((2, 3)), np.array(labels))


def test_labels_wrong_count_or_type():
    with pytest.raises(ValueError, match="expected 2 labels"):
        ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_state_dict_mismatch(model):
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"missing \['head.bias'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "head.bias"})
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"'head.weight' has shape \(8, 4\), expected \(8, 3\)"):
        model.load_state_dict({**state, "head.weight": np.zeros((8, 4))})
    other = ViT(**{**SMALL, "num_classes": 5})
    with pytest.raises(ValueError, match="head.weight"):
        model.load_state_dict(other.state_dict())


def test_failed_load_changes_nothing(model):
    before = model.state_dict()
    state = {k: np.ones_like(v) for k, v in before.items()}
    state["head.weight"] = np.zeros((8, 4))
    with pytest.raises(ValueError):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_optimizer_state_mismatch(model):
    opt = AdamW(model.parameters())
    state = opt.state_dict()
    state["exp_avg.0"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"exp_avg.0 has shape \(3,\), expected"):
        opt.load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({"step": np.array(0)})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(dim=10, heads=3), "dim 10 is not divisible by heads 3"),
        (dict(dropout=1.0), r"dropout probability must be in \[0, 1\)"),
        (dict(patch_dropout=-0.5), r"patch dropout probability must be in \[0, 1\)"),
        (dict(stem=2), "image 8×8 is not divisible by patch 4 after a stem of 2 stride-2 convolutions"),
        (dict(stem=-1), "stem must be >= 0"),
        (dict(stem_width=16), "stem_width must be 0, or >= 1 with a stem, got stem_width 16, stem 0"),
        (dict(stem=1, patch_size=2, stem_width=-4), "stem_width must be 0, or >= 1 with a stem"),
    ],
)
def test_bad_model_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**SMALL, **kwargs})


def test_conv2d_shape_mismatches():
    images = np.zeros((2, 6, 6, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"expected a kernel \(k, k, 3, F\) for 3 channels, got \(3, 3, 4, 8\)"):
        ops.conv2d_forward(images, np.zeros((3, 3, 4, 8), np.float32), None)
    with pytest.raises(ValueError, match=r"expected images \(B, H, W, C\), got an array of shape \(6, 6, 3\)"):
        ops.conv2d_forward(images[0], np.zeros((3, 3, 3, 8), np.float32), None)
    with pytest.raises(ValueError, match="a 9×9 kernel does not fit a 6×6 image padded by 1"):
        ops.conv2d_forward(images, np.zeros((9, 9, 3, 8), np.float32), None, padding=1)


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match="input has 5 features, weight expects 4"):
        Linear(4, 2)(np.zeros((3, 5), dtype=np.float32))


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'; expected one of"):
        ViT.from_preset("huge")
