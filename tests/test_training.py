"""Training works: the model overfits one small batch with AdamW in float32."""

import numpy as np

from minivit import ViT, backend, ops
from minivit.optim import AdamW, clip_grad_norm, warmup_cosine


def test_overfits_one_batch():
    backend.seed(0)
    model = ViT(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=2, mlp_dim=64)
    rng = np.random.default_rng(0)
    images = rng.random((16, 16, 16, 3), dtype=np.float32)
    labels = rng.integers(0, 10, size=16)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    steps = 150
    losses = []
    for step in range(steps):
        opt.lr = warmup_cosine(step, steps, warmup_steps=10, base_lr=1e-2)
        loss, cache = ops.cross_entropy_forward(model(images), labels)
        model.zero_grad()
        model.backward(ops.cross_entropy_backward(cache))
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
    assert losses[0] > 2.0, f"a fresh model should be near chance (ln 10 = 2.30), got {losses[0]:.3f}"
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.5f}")
    assert losses[-1] < 0.05, f"loss after {steps} steps is {losses[-1]:.4f}, expected < 0.05"
    predictions = model.eval()(images).argmax(axis=1)
    assert (predictions == labels).all()
