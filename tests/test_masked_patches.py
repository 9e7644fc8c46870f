"""Masked patch prediction (the ViT paper's Sec. 4.6): the corruption, the colour targets, gradients of
the whole model, that a masked patch's pixels are hidden, and the task through the training loop."""

from dataclasses import replace

import numpy as np
import pytest
from helpers import assert_bit_identical, assert_close, ctrl_c_at

import minivit
from minivit import backend, ops
from minivit.checkpoint import load_checkpoint
from minivit.config import RECIPES
from minivit.gradcheck import numerical_gradient, relative_error
from minivit.models.masked_patches import (
    KEPT,
    MASKED,
    REPLACED,
    UNTOUCHED,
    Corruption,
    MaskedPatchViT,
    draw_corruption,
    mean_colours,
)
from minivit.train import resume, train


def test_corruption_counts_and_kinds():
    kind, source = draw_corruption(np.random.default_rng(0), batch=400, num_patches=64)
    assert ((kind != UNTOUCHED).sum(axis=1) == 32).all()  # exactly half of each image's patches
    shares = [(kind == k).sum() / (kind != UNTOUCHED).sum() for k in (MASKED, REPLACED, KEPT)]
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
    own = np.arange(400 * 64).reshape(400, 64)
    assert (source[kind != REPLACED] == own[kind != REPLACED]).all()
    assert (source[kind == REPLACED] != own[kind == REPLACED]).all() and source.max() < 400 * 64
    again = draw_corruption(np.random.default_rng(0), batch=400, num_patches=64)
    assert (again.kind == kind).all() and (again.source == source).all()  # a seed repeats


def test_mean_colours_of_known_patches():
    pixels = np.zeros((1, 8, 8, 3))
    pixels[0, :4, :4] = [1.0, 0.0, 0.5]  # patch 0: levels 7, 0, 4
    pixels[0, :4, 4:] = [0.124, 0.125, 0.999]  # patch 1: 0, 1, 7
    pixels[0, 4:, :4, 0] = np.arange(4)[:, None] / 4  # patch 2: red mean 0.375 -> level 3
    np.testing.assert_array_equal(mean_colours(pixels, 4), [[7 * 64 + 4, 8 + 7, 3 * 64, 0]])


def small(xp, pool="cls", stem=0, seed=0):
    backend.seed(seed)
    model = MaskedPatchViT(image_size=8, patch_size=4 >> stem, num_classes=512, dim=8, depth=2, heads=2, mlp_dim=12,
                           pool=pool, stem=stem).to(dtype=np.float64)  # fmt: skip
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = xp.asarray(rng.standard_normal(p.shape) * 0.5)
    return model


def every_kind(xp):
    """3 images of 4 patches with every kind of corruption, a patch replaced from another image too."""
    kind = np.array([[REPLACED, MASKED, UNTOUCHED, KEPT], [MASKED, REPLACED, MASKED, UNTOUCHED], [KEPT] * 4])
    source = np.arange(12).reshape(3, 4)
    source[0, 0], source[1, 1] = 6, 3  # patch 6 (image 1) fills a place of image 0, patch 3 one of image 1
    return Corruption(xp.asarray(kind.astype(np.int8)), xp.asarray(source))


@pytest.mark.usefixtures("op_path")  # the plain ops and the CPU kernels alike
@pytest.mark.parametrize("pool, stem", [("cls", 0), ("mean", 0), ("cls", 1)])
def test_gradients_through_the_loss(xp, rand, pool, stem):
    """Every parameter ([mask] embedding, patch embedding, class token, blocks, head) and the images."""
    model = small(xp, pool, stem)
    images, corruption = rand(3, 8, 8, 3), every_kind(xp)
    targets = xp.asarray(np.random.default_rng(2).integers(0, 512, 12))
    chosen = xp.flatnonzero(corruption.kind.reshape(-1) != UNTOUCHED)

    def loss():
        logits = model.forward(images, corruption).reshape(-1, 512)
        return ops.cross_entropy_forward(logits[chosen], targets[chosen])[0]

    logits = model(images, corruption)
    _, cache = ops.cross_entropy_forward(logits.reshape(-1, 512)[chosen], targets[chosen])
    dlogits = xp.zeros((12, 512))
    dlogits[chosen] = ops.cross_entropy_backward(cache)
    model.zero_grad()
    dimages = model.backward(dlogits.reshape(logits.shape))
    errors = {"images": relative_error(dimages, numerical_gradient(loss, images))}
    errors |= {name: relative_error(p.grad, numerical_gradient(loss, p.data)) for name, p in model.named_parameters()}
    assert "mask_token" in errors
    assert_close(errors)


@pytest.mark.usefixtures("op_path")
def test_a_masked_patch_hides_its_pixels(xp, rand):
    model = small(xp).eval()
    images, corruption = rand(3, 8, 8, 3), every_kind(xp)
    base = backend.to_numpy(model(images, corruption))
    changed = images.copy()
    changed[1, :4, :4] += 1.0  # image 1, patch 0: masked, and the source of no other place
    np.testing.assert_array_equal(backend.to_numpy(model(changed, corruption)), base)
    changed[1, 4:, :4] += 1.0  # image 1, patch 2 (flat 6): masked in its place, but the source of image 0's patch 0
    moved = np.abs(backend.to_numpy(model(changed, corruption)) - base).max(axis=-1)  # (B, N)
    assert (moved[0] > 1e-6).all() and (moved[1:] == 0).all()  # image 0 sees it, no other image does


def test_bad_corruption_is_a_clear_error():
    model = MaskedPatchViT(image_size=8, patch_size=4, num_classes=512, dim=8, depth=1, heads=2, mlp_dim=8)
    with pytest.raises(ValueError, match=r"corruption is for \(3, 4\) patches, the images have \(2, 4\)"):
        model(np.zeros((2, 8, 8, 3), np.float32), every_kind(np))
    with pytest.raises(ValueError, match="needs every patch's output token"):
        MaskedPatchViT(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, patch_dropout=0.5)
    with pytest.raises(ValueError, match="masked \\+ replaced <= 1"):
        draw_corruption(np.random.default_rng(0), 2, 4, masked=0.8, replaced=0.3)


SMALL = replace(RECIPES["plain-quick"], task="mpp", dim=32, depth=2, heads=2, mlp_dim=64, epochs=2, batch_size=64,
                train_subset=1024, test_subset=256, label_smoothing=0.0, warmup_epochs=0.25)  # fmt: skip


@pytest.fixture(scope="module")
def reference(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mpp-reference")
    return run_dir, train(SMALL, run_dir, data_dir=cifar_dir, progress=False)


def test_pretraining_learns_and_resumes_bit_identical(reference, cifar_dir, tmp_path):
    """The loss falls; Ctrl-C in epoch 2, resumed: the same bits as the run never stopped."""
    history = reference[1]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["test_loss"] < np.log(512)
    with pytest.raises(minivit.train.Interrupted, match="stopped at epoch 2, step 3"):
        train(SMALL, tmp_path / "stopped", data_dir=cifar_dir, progress=False, callbacks=[ctrl_c_at(2, 3)])
    resumed = resume(tmp_path / "stopped", data_dir=cifar_dir, progress=False)
    assert_bit_identical(load_checkpoint(tmp_path / "stopped" / "checkpoint.npz")[0].state_dict(),
                         load_checkpoint(reference[0] / "checkpoint.npz")[0].state_dict())  # fmt: skip
    assert [m["test_accuracy"] for m in resumed] == [m["test_accuracy"] for m in history]


def test_a_classifier_starts_from_the_pretrained_weights_with_a_zero_head(reference, cifar_dir, tmp_path):
    config = replace(SMALL, task="classify", label_smoothing=0.1, epochs=1, lr=0.0, min_lr=0.0,
                     init=str(reference[0] / "checkpoint.npz"))  # fmt: skip
    train(config, tmp_path / "classify", data_dir=cifar_dir, progress=False)
    start = load_checkpoint(reference[0] / "checkpoint.npz")[0].state_dict()
    state = load_checkpoint(tmp_path / "classify" / "checkpoint.npz")[0].state_dict()
    assert state["head.weight"].shape == (32, 10) and not state["head.weight"].any() and not state["head.bias"].any()
    assert "mask_token" not in state
    assert_bit_identical({k: v for k, v in state.items() if not k.startswith("head.")},
                         {k: v for k, v in start.items() if not k.startswith("head.") and k != "mask_token"})  # fmt: skip
