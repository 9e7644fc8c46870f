"""The ViT model: parameter names and shapes, the hybrid stem, presets, initialisation, PatchDropout,
position embeddings and resizing; and that it learns (overfits one small batch with AdamW in float32)."""

import numpy as np
import pytest

from minivit import PRESETS, ViT, backend, ops, preset
from minivit.optim import AdamW, clip_grad_norm, warmup_cosine

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
