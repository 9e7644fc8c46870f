"""Modules: modes, state_dict and its atomic save/load, gradients, attention maps, patches; the ops' edge cases."""

import os

import numpy as np
import pytest

from minivit import ViT, nn, ops

SMALL = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=8)


def test_train_eval_switches_dropout_everywhere():
    model = ViT(**SMALL, dropout=0.5)
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    model.eval()
    assert all(not m.training for m in model.modules())
    np.testing.assert_array_equal(model(images), model(images))
    model.train()
    assert all(m.training for m in model.modules())
    assert not np.array_equal(model(images), model(images))


def test_state_dict_round_trip_through_npz(tmp_path):
    a, b = ViT(**SMALL), ViT(**SMALL)
    path = tmp_path / "model.npz"
    a.save(path)
    b.load(path)
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(a(images), b(images))
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = ViT(**SMALL)
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    model.head.weight.data += 1
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_load_keeps_dtype():
    model = ViT(**SMALL).to(dtype=np.float64)
    model.load_state_dict(ViT(**SMALL).state_dict())
    assert all(p.data.dtype == np.float64 for p in model.parameters())


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2)
    x = np.ones((4, 3), dtype=np.float32)
    layer(x)
    layer.backward(np.ones((4, 2), dtype=np.float32))
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any()


def test_attention_maps_are_kept():
    model = ViT(**SMALL)
    model(np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32))
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (3, 2, 5, 5)
    np.testing.assert_allclose(maps[0].sum(axis=-1), 1, rtol=1e-5)


def test_causal_attention_ignores_the_future():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 4))
    weights = rng.standard_normal((4, 12)), rng.standard_normal(12), rng.standard_normal((4, 4)), rng.standard_normal(4)
    out, cache = ops.attention_forward(x, *weights, num_heads=2, causal=True)
    assert not np.triu(cache.attn[0, 0], k=1).any()
    changed = x.copy()
    changed[0, 3:] += 10.0  # change only the last two tokens
    out2, _ = ops.attention_forward(changed, *weights, num_heads=2, causal=True)
    np.testing.assert_allclose(out[0, :3], out2[0, :3], rtol=1e-12)
    assert not np.allclose(out[0, 3:], out2[0, 3:])


def test_patchify_order_and_round_trip():
    image = np.arange(4 * 4 * 2).reshape(4, 4, 2)
    patches = ops.patchify(image, 2)
    assert patches.shape == (4, 8)
    # patch 1 is the top-right 2×2 block, read row by row, channels innermost
    np.testing.assert_array_equal(patches[1], image[0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(ops.unpatchify(patches, 2, 4), image)
    batch = np.random.default_rng(0).random((3, 8, 12, 3))
    np.testing.assert_array_equal(ops.unpatchify(ops.patchify(batch, 4), 4, (8, 12)), batch)


def test_a_convolution_with_kernel_and_stride_p_is_the_patch_embedding():
    """Eq. 1's x_p E is a P×P convolution with stride P: its kernel, reshaped to (P²C, D), is E."""
    rng = np.random.default_rng(6)
    images, kernel, bias = rng.standard_normal((2, 8, 12, 3)), rng.standard_normal((4, 4, 3, 5)), rng.standard_normal(5)
    conv, _ = ops.conv2d_forward(images, kernel, bias, stride=4)  # (B, 2, 3, D)
    embedded, _ = ops.linear_forward(ops.patchify(images, 4), kernel.reshape(4 * 4 * 3, 5), bias)  # (B, 6, D)
    np.testing.assert_allclose(conv.reshape(2, 6, 5), embedded, rtol=1e-12, atol=1e-12)


def test_softmax_is_stable_for_large_logits():
    out, _ = ops.softmax_forward(np.array([[1000.0, 1000.0, -1000.0], [1e4, 0.0, 0.0]], dtype=np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], atol=1e-7)
    loss, _ = ops.cross_entropy_forward(np.array([[1e4, 0.0]], dtype=np.float32), np.array([1]))
    np.testing.assert_allclose(float(loss), 1e4, rtol=1e-6)
