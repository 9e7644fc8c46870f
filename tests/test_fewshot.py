"""Few-shot linear evaluation (minivit.fewshot): the closed-form ridge fit against a direct least-squares
solve, separable data, λ chosen without the test set, and seeded draws."""

import numpy as np
import pytest

from minivit import ViT
from minivit.fewshot import few_shot, image_features, ridge_fit, ridge_predict
from minivit.models.resnet import ResNet


def blobs(n, classes, features, spread, seed=0):
    """n points around `classes` random centres in `features` dimensions, in a random order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, features)) * 3
    labels = rng.integers(0, classes, n)
    return centres[labels] + spread * rng.standard_normal((n, features)), labels


@pytest.mark.parametrize("n, f", [(12, 40), (30, 5)], ids=["fewer-examples-than-features", "more"])
def test_the_closed_form_is_the_least_squares_solution(n, f):
    """The N×N form equals ridge regression solved directly: [Zc; √λ I] W = [Yc; 0] by lstsq."""
    rng = np.random.default_rng(1)
    x, labels, l2 = rng.standard_normal((n, f)) * 2 + 1, rng.integers(0, 4, n), 0.7
    w, b, mean, std = ridge_fit(x, labels, 4, l2)
    z = (x - mean) / std
    targets = np.where(np.arange(4) == labels[:, None], 1.0, -1.0)
    zc, yc = z - z.mean(axis=0), targets - targets.mean(axis=0)
    direct = np.linalg.lstsq(np.vstack([zc, np.sqrt(l2) * np.eye(f)]), np.vstack([yc, np.zeros((f, 4))]), rcond=None)[0]
    np.testing.assert_allclose(w, direct, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, targets.mean(axis=0) - z.mean(axis=0) @ direct, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.mean(z @ w + b - targets, axis=0), 0, atol=1e-12)  # the unpenalised bias fits the mean


def test_separable_classes_are_read_out_with_few_shots():
    x, y = blobs(3000, 5, 20, spread=0.3)
    scores = few_shot(x[:2000], y[:2000], x[2000:], y[2000:], shots=(1, 5), draws=3, holdout=500)
    assert all(acc == 1.0 for k in (1, 5) for acc in scores[k]["test"]), scores


def test_more_shots_read_out_more_and_draws_repeat_by_seed():
    x, y = blobs(4000, 10, 30, spread=8.0, seed=2)  # overlapping classes: one shot is not enough
    args = (x[:3000], y[:3000], x[3000:], y[3000:])
    scores = few_shot(*args, shots=(1, 25), draws=4, holdout=1000, seed=3)
    assert np.mean(scores[25]["test"]) > np.mean(scores[1]["test"]) + 0.1, scores
    assert len(scores[1]["test"]) == len(scores[1]["holdout"]) == 4 and len(set(scores[1]["test"])) > 1
    assert few_shot(*args, shots=(1, 25), draws=4, holdout=1000, seed=3) == scores


def test_lambda_is_chosen_on_held_out_training_images_only():
    """The test labels never move the choice: scrambled, they give the same λ and held-out scores."""
    x, y = blobs(2500, 4, 50, spread=2.0, seed=4)
    scores = few_shot(x[:2000], y[:2000], x[2000:], y[2000:], shots=(5,), draws=3, holdout=500)
    scrambled = few_shot(x[:2000], y[:2000], x[2000:], y[2000:][::-1].copy(), shots=(5,), draws=3, holdout=500)
    assert scrambled[5]["l2"] == scores[5]["l2"] and scrambled[5]["holdout"] == scores[5]["holdout"]
    assert ridge_predict(ridge_fit(x[:40], y[:40], 4, 1.0), x[2000:]).shape == (500,)


@pytest.mark.parametrize("kwargs, message", [
    ({"shots": (1000,)}, "shots must be between 1 and"),
    ({"holdout": 0}, "holdout must be between 1 and"),
])  # fmt: skip
def test_bad_arguments_are_clear_errors(kwargs, message):
    x, y = blobs(300, 3, 4, spread=1.0)
    with pytest.raises(ValueError, match=message):
        few_shot(x[:200], y[:200], x[200:], y[200:], **{"holdout": 50, **kwargs})
    with pytest.raises(ValueError, match="l2 must be > 0"):
        ridge_fit(x, y, 3, 0.0)


@pytest.mark.parametrize("make", [lambda: ViT(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8),
                                  lambda: ViT(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, pool="mean"),
                                  lambda: ResNet(image_size=8, width=4, blocks=(1, 1), groups=2)],
                         ids=["vit-cls", "vit-mean", "resnet"])  # fmt: skip
def test_image_features_are_what_the_head_reads(make):
    """In batches and eval mode: the logits are the features through the head, for every image."""
    from minivit.data import normalize

    model = make()
    for p in model.head.parameters():
        p.data[...] = np.random.default_rng(0).standard_normal(p.shape)
    images = np.random.default_rng(1).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    features = image_features(model, images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), batch_size=3)
    logits = model(normalize(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), model.dtype))
    assert not model.training and features.shape == (7, model.head.weight.shape[0])
    np.testing.assert_allclose(features @ model.head.weight.data + model.head.bias.data, logits, rtol=1e-5, atol=1e-6)
