"""Optimisers, schedule and clipping: their maths, weight-decay groups and saved state."""

import math

import numpy as np
import pytest

from minivit import ViT, ops
from minivit.nn import Parameter
from minivit.optim import SGD, AdamW, clip_grad_norm, warmup_cosine


def test_warmup_cosine():
    lrs = [warmup_cosine(s, total_steps=110, warmup_steps=10, base_lr=1.0, min_lr=0.1) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only down


def test_clip_grad_norm():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    a.grad[:], b.grad[:] = [3.0, 0.0], [4.0]
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [3.0, 0.0])  # under the limit: untouched
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0.0, 0.8], rtol=1e-5)


def test_adamw_first_step_and_decay_groups():
    decayed, kept = Parameter(np.full(3, 2.0)), Parameter(np.full(3, 2.0), decay=False)
    for p in (decayed, kept):
        p.grad[:] = [1.0, -2.0, 0.5]
    AdamW([decayed, kept], lr=0.1, weight_decay=0.5).step()
    # step 1: m̂ = g and v̂ = g², so the Adam step is lr·sign(g) (up to eps)
    np.testing.assert_allclose(kept.data, 2.0 - 0.1 * np.sign(kept.grad), rtol=1e-6)
    np.testing.assert_allclose(decayed.data, 2.0 * (1 - 0.1 * 0.5) - 0.1 * np.sign(decayed.grad), rtol=1e-6)


def test_adamw_constant_gradient_steps_are_bias_corrected():
    """With the same g every step, m = (1-β1ᵗ) g and v = (1-β2ᵗ) g², so the corrected m̂ = g and v̂ = g²:
    every step is lr·g / (|g| + ε), the first and the tenth alike. Without the corrections the early
    steps would be far off (m̂ ≈ 0.1 g at t = 1 with β1 = 0.9)."""
    p = Parameter(np.full(3, 1.0), decay=False)
    g = np.array([0.5, -2.0, 1e-3])
    opt = AdamW([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for t in range(1, 11):
        before = p.data.copy()
        p.grad[:] = g
        opt.step()
        np.testing.assert_allclose(before - p.data, 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-9, err_msg=f"step {t}")
        state = opt.state_dict()  # the moments are kept between steps, as running averages
        np.testing.assert_allclose(state["exp_avg.0"], (1 - 0.9**t) * g, rtol=1e-12, err_msg=f"m after step {t}")
        np.testing.assert_allclose(state["exp_avg_sq.0"], (1 - 0.99**t) * g * g, rtol=1e-12, err_msg=f"v after step {t}")


def test_adamw_weight_decay_is_decoupled_from_the_gradient():
    """With zero gradients Adam's step is 0, so AdamW shrinks a decayed weight by exactly (1 - lr λ) per step
    (decay as L2 in the gradient would instead give steps of lr·sign(θ)); an undecayed one stays."""
    decayed, kept = Parameter(np.array([2.0, -3.0])), Parameter(np.array([2.0, -3.0]), decay=False)
    opt = AdamW([decayed, kept], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.step()  # gradients stay 0
    np.testing.assert_allclose(decayed.data, np.array([2.0, -3.0]) * (1 - 0.1 * 0.5) ** 3, rtol=1e-12)
    np.testing.assert_array_equal(kept.data, [2.0, -3.0])


def test_sgd_momentum():
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad[:] = 1.0
    opt.step()
    opt.step()
    np.testing.assert_allclose(p.data, 1.0 - 0.1 * 1.0 - 0.1 * 1.9)


@pytest.mark.parametrize("opt_class", [AdamW, SGD])
def test_resumed_optimizer_matches_uninterrupted(opt_class):
    """Save model and optimiser after 3 steps, load into fresh objects, take 3 more: bit-identical."""
    rng = np.random.default_rng(0)
    images = rng.random((4, 8, 8, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 1])
    config = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8)

    def train(model, opt, steps):
        for _ in range(steps):
            _, cache = ops.cross_entropy_forward(model(images), labels)
            model.zero_grad()
            model.backward(ops.cross_entropy_backward(cache))
            opt.lr *= 0.9
            opt.step()

    model = ViT(**config)
    opt = opt_class(model.parameters(), lr=1e-2)
    train(model, opt, 3)
    model_state, opt_state = model.state_dict(), opt.state_dict()
    train(model, opt, 3)

    resumed = ViT(**config).load_state_dict(model_state)
    resumed_opt = opt_class(resumed.parameters(), lr=123.0).load_state_dict(opt_state)
    assert resumed_opt.step_count == 3 and math.isclose(resumed_opt.lr, 1e-2 * 0.9**3)
    train(resumed, resumed_opt, 3)
    for name, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[name], err_msg=name)
