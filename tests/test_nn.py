"""Modules: parameter names, modes, state_dict, atomic save/load, attention maps, presets."""

import os

import numpy as np
import pytest

from minivit import PRESETS, ViT, nn, ops, preset

SMALL = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=8)


def test_parameter_names_and_shapes():
    model = ViT(**SMALL)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes["patch_embed.weight"] == (4 * 4 * 3, 8)
    assert shapes["cls_token"] == (1, 1, 8)
    assert shapes["pos_embed"] == (1, 4 + 1, 8)
    assert shapes["blocks.1.attn.qkv.weight"] == (8, 24)
    assert shapes["blocks.1.mlp.fc2.weight"] == (8, 8)
    assert shapes["head.weight"] == (8, 3)
    assert len(shapes) == 6 + 2 * 12 + 2  # embeddings, blocks, norm and head
    mean = ViT(**SMALL, pool="mean")
    assert "cls_token" not in dict(mean.named_parameters())
    assert mean.pos_embed.shape == (1, 4, 8)


def test_hybrid_stem_halves_the_side_and_doubles_the_width_up_to_half_the_dim():
    model = ViT(image_size=32, patch_size=1, num_classes=3, dim=64, depth=1, heads=2, mlp_dim=8, stem=2)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes["stem.0.weight"] == (3, 3, 3, 16) and shapes["stem.1.weight"] == (16,)  # 32×32 -> 16×16×16
    assert shapes["stem.3.weight"] == (3, 3, 16, 32) and shapes["stem.4.weight"] == (32,)  # -> 8×8×32
    assert shapes["patch_embed.weight"] == (32, 64) and shapes["pos_embed"] == (1, 8 * 8 + 1, 64)
    assert {name for name, p in model.named_parameters() if p.decay and name.startswith("stem")} == {
        "stem.0.weight", "stem.3.weight"}  # fmt: skip
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match="not divisible by patch 4 after a stem of 2 stride-2 convolutions"):
        ViT(image_size=8, patch_size=4, dim=8, heads=2, stem=2)
    with pytest.raises(ValueError, match="stem must be >= 0"):
        ViT(image_size=32, patch_size=1, dim=4, heads=2, stem=3)


def test_stem_width_sets_the_last_convolution_apart_from_the_dim():
    model = ViT(image_size=32, patch_size=1, num_classes=3, dim=64, depth=1, heads=2, mlp_dim=8, stem=2, stem_width=96)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes["stem.0.weight"] == (3, 3, 3, 48) and shapes["stem.3.weight"] == (3, 3, 48, 96)
    assert shapes["patch_embed.weight"] == (96, 64)
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 3)
    assert ViT.from_config(model.config).config.stem_width == 96  # what a checkpoint rebuilds


def test_weight_decay_flags():
    decayed = {name for name, p in ViT(**SMALL).named_parameters() if p.decay}
    assert decayed == {
        "patch_embed.weight", "head.weight",
        *(f"blocks.{i}.{n}.weight" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
    }


def test_initialisation():
    model = ViT.from_preset("tiny")
    w = model.blocks[0].mlp.fc1.weight.data
    assert abs(float(w.std()) - 0.02 * 0.88) < 0.002  # truncated at ±2σ: std 0.88 σ
    assert float(np.abs(w).max()) <= 0.04
    assert not model.blocks[0].mlp.fc1.bias.data.any()
    assert (model.norm.weight.data == 1).all()


def test_presets():
    assert PRESETS["tiny"].dim == 192 and PRESETS["tiny"].depth == 6 and PRESETS["tiny"].heads == 3
    assert PRESETS["tiny"].mlp_dim == 384 and PRESETS["tiny"].patch_size == 4 and PRESETS["tiny"].image_size == 32
    model = ViT.from_preset("mini", num_classes=100)
    assert model.config == preset("mini", num_classes=100) and model.head.weight.shape[1] == 100


def test_train_eval_switches_dropout_everywhere():
    model = ViT(**SMALL, dropout=0.5)
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    model.eval()
    assert all(not m.training for m in model.modules())
    np.testing.assert_array_equal(model(images), model(images))
    model.train()
    assert all(m.training for m in model.modules())
    assert not np.array_equal(model(images), model(images))


def test_patch_dropout_keeps_the_class_token_and_a_random_share_of_each_images_patches():
    x = np.random.default_rng(0).standard_normal((16, 65, 8)).astype(np.float32)  # (B, 1 + 64 patches, D)
    out, (keep, shape) = ops.patch_dropout_forward(x, 0.25, rng=np.random.default_rng(1))
    assert out.shape == (16, 1 + 48, 8) and keep.shape == (16, 49) and shape == x.shape
    assert (keep[:, 0] == 0).all() and (np.diff(keep, axis=1) > 0).all()  # the class token, then patches in order
    np.testing.assert_array_equal(out, np.stack([x[i, keep[i]] for i in range(16)]))
    assert len({tuple(row) for row in keep}) == 16  # every image keeps its own subset
    counts = np.bincount(keep[:, 1:].ravel(), minlength=65)[1:]
    assert counts.min() > 0  # over the batch every patch position is kept somewhere
    same, _ = ops.patch_dropout_forward(x, 0.25, train=False)
    assert same is x
    with pytest.raises(ValueError, match=r"patch dropout probability must be in \[0, 1\)"):
        ops.patch_dropout_forward(x, 1.0)
    with pytest.raises(ValueError, match=r"tokens \(B, T, D\)"):
        ops.patch_dropout_forward(x[0], 0.5)


def test_patch_dropout_shortens_training_only():
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    full, dropping = ViT(**SMALL), ViT(**SMALL, patch_dropout=0.5)  # 4 patches: 2 kept while training
    dropping.load_state_dict(full.state_dict())
    dropping(images)
    assert dropping.attention_maps()[0].shape == (2, 2, 1 + 2, 1 + 2)
    dropping.eval()
    np.testing.assert_array_equal(dropping(images), full(images))
    assert dropping.attention_maps()[0].shape == (2, 2, 1 + 4, 1 + 4)


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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path, umask, mode):
    """A checkpoint or cache an instructor writes must be readable by students where the umask says so
    (the temporary file it is renamed from starts at 0600); a file written over keeps its own mode."""
    from minivit.atomic import atomic_file

    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "new.bin") as f:
            f.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as f:  # what a plain write gives, for comparison
            f.write(b"x")
        (tmp_path / "old.bin").write_bytes(b"old")
        os.chmod(tmp_path / "old.bin", 0o640)
        with atomic_file(tmp_path / "old.bin") as f:
            f.write(b"new")
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "new.bin").st_mode & 0o777) == oct(mode)
    assert os.stat(tmp_path / "new.bin").st_mode & 0o777 == os.stat(tmp_path / "plain.bin").st_mode & 0o777
    assert oct(os.stat(tmp_path / "old.bin").st_mode & 0o777) == oct(0o640)
    assert (tmp_path / "old.bin").read_bytes() == b"new"


def test_position_embedding_variants_and_their_errors():
    shapes = {name: p.shape for name, p in ViT(**dict(SMALL, image_size=12), pos_embed="2d").named_parameters()}
    assert shapes["pos_row"] == shapes["pos_col"] == (1, 3, 4) and "pos_embed" not in shapes  # 3×3 grid, D/2 each
    every = ViT(**SMALL, pos_place="every-layer")
    assert every.pos_embed.shape == (2, 5, 8) and every.position_embeddings().shape == (2, 5, 8)
    assert ViT(**SMALL, pos_embed="none").position_embeddings() is None
    relative = ViT(**SMALL, pos_embed="relative")
    assert relative.position_embeddings() is None and relative.blocks[1].attn.rel.shape == (2 * 5 - 1, 8)
    model = ViT(**dict(SMALL, image_size=12), pos_embed="2d")  # a class token, then 3×3 patches
    table = model.position_embeddings()[0]  # (T, D)
    assert not table[0].any()  # the class token's row
    np.testing.assert_array_equal(table[1 + 4, :4], model.pos_row.data[0, 1])  # patch (1, 1): row 1 ...
    np.testing.assert_array_equal(table[1 + 5, 4:], model.pos_col.data[0, 2])  # patch (1, 2): column 2
    for kwargs, message in [({"pos_embed": "3d"}, "pos_embed must be one of"),
                            ({"pos_place": "output"}, "pos_place one of"),
                            ({"pos_embed": "none", "pos_place": "every-layer"}, "'none' has none to place"),
                            ({"pos_embed": "relative", "pos_place": "every-layer-shared"}, "'relative' has none"),
                            ({"pos_embed": "relative", "patch_dropout": 0.3}, "and an absolute pos_embed"),
                            ({"pos_embed": "2d", "dim": 9, "heads": 3}, "dim 9 is odd"),
                            ({"patch_dropout": 0.5, "pos_place": "every-layer"}, "needs pos_place 'input'")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ViT(**{**SMALL, **kwargs})


def test_resize_to_the_same_size_changes_nothing():
    model = ViT(**SMALL, pos_embed="2d", pool="mean")
    same = model.resize(8)
    assert same is not model and same.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))


@pytest.mark.parametrize("pool, place", [("cls", "input"), ("mean", "every-layer")])
def test_resize_keeps_a_linear_ramp_of_position_embeddings_a_ramp(pool, place):
    """Sec. 3.2: E_pos interpolated by its place in the image. On a ramp E(r, c) = r a + c b + e over the
    2×2 grid, the 5×5 grid of a 20-pixel image must hold the same ramp at r, c = 0, 1/4, ..., 1."""
    rng = np.random.default_rng(0)
    model = ViT(**SMALL, pool=pool, pos_place=place).to(dtype=np.float64)
    a, b, e = rng.standard_normal((3, 8))
    grid = np.arange(2)
    ramp = (grid[:, None, None] * a + grid[None, :, None] * b + e).reshape(4, 8)  # raster order
    model.pos_embed.data[:, -4:] = ramp
    bigger = model.resize(20)
    fine = np.arange(5) / 4
    expected = (fine[:, None, None] * a + fine[None, :, None] * b + e).reshape(25, 8)
    tables = bigger.position_embeddings()
    assert tables.shape == (len(model.pos_embed.data), 25 + (pool == "cls"), 8)
    for table in tables:
        np.testing.assert_allclose(table[-25:], expected, rtol=1e-12, atol=1e-12)
    if pool == "cls":
        np.testing.assert_array_equal(bigger.pos_embed.data[:, 0], model.pos_embed.data[:, 0])  # the class token's
    kept = {k: v for k, v in model.state_dict().items() if k != "pos_embed"}
    assert all(np.array_equal(v, bigger.state_dict()[k]) for k, v in kept.items())
    assert bigger(np.zeros((1, 20, 20, 3))).shape == (1, 3)


def test_resize_2d_interpolates_rows_and_columns_and_refuses_relative():
    model = ViT(**SMALL, pos_embed="2d").to(dtype=np.float64)
    model.pos_row.data[0] = [[0.0] * 4, [1.0] * 4]
    bigger = model.resize(16)  # 2 -> 4 rows
    np.testing.assert_allclose(bigger.pos_row.data[0, :, 0], [0, 1 / 3, 2 / 3, 1])
    with pytest.raises(ValueError, match="no image layout to interpolate"):
        ViT(**SMALL, pos_embed="relative").resize(16)
    with pytest.raises(ValueError, match="not divisible by patch 4"):
        model.resize(10)
