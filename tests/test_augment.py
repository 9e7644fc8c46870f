"""Augmentation: crop, flip, normalise, one-hot, mixup, CutMix, the augment() pipeline and epoch batches.

The tests that take `xp` run on each backend that is there (CuPy only where a GPU is); a seed must give
the same augmentation on either backend, so those results are also compared with NumPy's.
"""

import numpy as np
import pytest

from minivit.backend import module_name, to_numpy
from minivit.data import augment, cutmix, epoch_batches, mixup, normalize, one_hot, random_crop, random_flip

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def rng(seed=0):
    return np.random.default_rng(seed)


def distinct_images(b, h=6, w=5, c=3):
    """uint8 (b, h, w, c) images whose pixels are all non-zero and differ within each image (not mirror-symmetric)."""
    per_image = h * w * c
    assert per_image < 255
    values = np.arange(per_image).reshape(h, w, c) + 1
    return np.stack([(values + k) % 255 + 1 for k in range(b)]).astype(np.uint8)


def random_float_images(b, h=8, w=8, c=3, seed=1):
    return np.random.default_rng(seed).standard_normal((b, h, w, c))


# --- random_crop ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_shape_dtype_backend(xp, dtype):
    images = xp.asarray(distinct_images(5).astype(dtype))
    out = random_crop(images, 2, rng())
    assert out.shape == images.shape and out.dtype == dtype and module_name(out) == xp.__name__


def window_offsets(out, image, padding):
    """The offsets (dy, dx) in [0, 2p]² at which `out` is a window of the zero-padded `image`."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    r = range(2 * padding + 1)
    return [(dy, dx) for dy in r for dx in r if np.array_equal(out, padded[dy : dy + h, dx : dx + w])]


def test_crop_is_a_window_of_the_padded_image(xp):
    images = distinct_images(64)
    padding = 2
    out = to_numpy(random_crop(xp.asarray(images), padding, rng(3)))
    offsets = []
    for o, image in zip(out, images):
        found = window_offsets(o, image, padding)
        assert len(found) == 1, f"crop is not exactly one window of the padded image: {found}"
        offsets.append(found[0])
    dys, dxs = zip(*offsets)
    # offsets are drawn independently per image and per axis over the whole range
    assert set(dys) == set(dxs) == set(range(2 * padding + 1))
    assert len(set(offsets)) > 10


def test_crop_without_padding_is_identity(xp):
    images = xp.asarray(distinct_images(6))
    out = random_crop(images, 0, rng())
    np.testing.assert_array_equal(to_numpy(out), to_numpy(images))


def test_crop_of_shifted_images_has_zero_borders(xp):
    padding = 3
    images = np.full((40, 8, 8, 3), 200, np.uint8)
    out = to_numpy(random_crop(xp.asarray(images), padding, rng(5)))
    assert set(np.unique(out)) <= {0, 200}
    shifted = 0
    for o in out:
        zero_rows = np.flatnonzero((o == 0).all(axis=(1, 2)))
        zero_cols = np.flatnonzero((o == 0).all(axis=(0, 2)))
        # the zero border is at most `padding` wide, on one side of each axis
        assert len(zero_rows) <= padding and len(zero_cols) <= padding
        for zeros in (zero_rows, zero_cols):
            assert list(zeros) in (list(range(len(zeros))), list(range(8 - len(zeros), 8)))
        # and everything else is the image
        assert (o == 200).sum() == (8 - len(zero_rows)) * (8 - len(zero_cols)) * 3
        shifted += bool(len(zero_rows) or len(zero_cols))
    assert shifted > 20  # 1/49 of crops is not shifted at all


def test_crop_is_deterministic_and_same_on_every_backend(xp):
    images = distinct_images(32)
    a = to_numpy(random_crop(xp.asarray(images), 4, rng(7)))
    np.testing.assert_array_equal(a, to_numpy(random_crop(xp.asarray(images), 4, rng(7))))
    np.testing.assert_array_equal(a, random_crop(images, 4, rng(7)))  # the NumPy result for the same seed
    assert not np.array_equal(a, to_numpy(random_crop(xp.asarray(images), 4, rng(8))))


# --- random_flip ---------------------------------------------------------------------------------------------------


def test_flip_mirrors_exactly_or_leaves_alone(xp):
    images = distinct_images(400)
    out = to_numpy(random_flip(xp.asarray(images), rng(11)))
    assert out.shape == images.shape and out.dtype == np.uint8
    flipped = np.array([np.array_equal(o, image[:, ::-1]) for o, image in zip(out, images)])
    kept = np.array([np.array_equal(o, image) for o, image in zip(out, images)])
    assert (flipped ^ kept).all()  # each image is exactly one of the two
    assert 0.4 < flipped.mean() < 0.6


def test_flip_probability(xp):
    images = xp.asarray(distinct_images(50))
    np.testing.assert_array_equal(to_numpy(random_flip(images, rng(), p=0.0)), to_numpy(images))
    np.testing.assert_array_equal(to_numpy(random_flip(images, rng(), p=1.0)), to_numpy(images)[:, :, ::-1])
    out = to_numpy(random_flip(images, rng(2), p=0.2))
    rate = np.mean([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, to_numpy(images))])
    assert 0.05 < rate < 0.4


def test_flip_is_deterministic_and_same_on_every_backend(xp):
    images = distinct_images(64)
    a = to_numpy(random_flip(xp.asarray(images), rng(4)))
    np.testing.assert_array_equal(a, to_numpy(random_flip(xp.asarray(images), rng(4))))
    np.testing.assert_array_equal(a, random_flip(images, rng(4)))
    assert not np.array_equal(a, to_numpy(random_flip(xp.asarray(images), rng(5))))


# --- normalize and one_hot -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-13)])
def test_normalize_formula(xp, dtype, rtol):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 128, 255)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)  # distinct per channel, so a channel mix-up shows
    x = normalize(xp.asarray(images), mean, std, dtype=dtype)
    assert x.dtype == dtype and x.shape == images.shape and module_name(x) == xp.__name__
    expected = np.empty(images.shape)
    for c in range(3):
        expected[..., c] = (images[..., c] / 255.0 - mean[c]) / std[c]
    np.testing.assert_allclose(to_numpy(x), expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(to_numpy(x)[0, 0, 0], [-0.5, (128 / 255 - 0.5) / 0.3, 0.25], rtol=rtol, atol=rtol)
    assert images[0, 0, 0].tolist() == [0, 128, 255]  # the input is not changed


def test_one_hot(xp):
    labels = xp.asarray(np.array([2, 0, 9, 2]))
    t = one_hot(labels, 10)
    assert t.dtype == np.float32 and t.shape == (4, 10)
    expected = np.zeros((4, 10))
    expected[[0, 1, 2, 3], [2, 0, 9, 2]] = 1
    np.testing.assert_array_equal(to_numpy(t), expected)
    assert one_hot(labels, 12, dtype=np.float64).dtype == np.float64


# --- mixup and CutMix ----------------------------------------------------------------------------------------------


def mixing_batch(xp, b=10):
    """Float images that differ everywhere, and one-hot targets of distinct labels (so a target row names both images)."""
    labels = np.random.default_rng(2).permutation(b)
    x = random_float_images(b)
    return xp.asarray(x), xp.asarray(np.eye(b)[labels]), x, labels


def partners(t, labels):
    """From mixed targets: each row's weight on its own label and the index of the image it was mixed with."""
    own = t[np.arange(len(labels)), labels]
    j = np.full(len(labels), -1)
    for i in range(len(labels)):
        others = [k for k in range(len(labels)) if k != i and t[i, labels[k]] > 0]
        assert len(others) <= 1, f"row {i} mixes more than two labels"
        j[i] = others[0] if others else i
    return own, j


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_is_a_convex_combination(xp, alpha):
    xb, yb, x, labels = mixing_batch(xp)
    seen_mixed = False
    for seed in range(5):
        out, t = (to_numpy(a) for a in mixup(xb, yb, alpha, rng(seed)))
        assert out.shape == x.shape and t.shape == (10, 10)
        np.testing.assert_allclose(t.sum(axis=1), 1, rtol=1e-12)
        assert (t >= 0).all()
        own, j = partners(t, labels)
        assert sorted(j) == list(range(10))  # the partners are a permutation of the batch
        moved = j != np.arange(10)
        assert moved.any()
        lam = own[moved][0]
        np.testing.assert_allclose(own[moved], lam, rtol=1e-12)  # one λ for the whole batch
        assert 0 <= lam <= 1
        np.testing.assert_allclose(out, lam * x + (1 - lam) * x[j], rtol=1e-12, atol=1e-12)
        seen_mixed |= 0.01 < lam < 0.99
    assert seen_mixed


def test_mixup_is_deterministic_and_same_on_every_backend(xp):
    xb, yb, x, _ = mixing_batch(xp)
    a = [to_numpy(v) for v in mixup(xb, yb, 0.4, rng(9))]
    b = [to_numpy(v) for v in mixup(xb, yb, 0.4, rng(9))]
    ref = mixup(x, np.asarray(to_numpy(yb)), 0.4, rng(9))
    for u, v, w in zip(a, b, ref):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_allclose(u, w, rtol=1e-12)
    assert not np.array_equal(a[0], to_numpy(mixup(xb, yb, 0.4, rng(10))[0]))


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area(xp):
    xb, yb, x, labels = mixing_batch(xp)
    h, w = x.shape[1:3]
    fractions = []
    for seed in range(20):
        out, t = (to_numpy(a) for a in cutmix(xb, yb, 1.0, rng(seed)))
        assert out.shape == x.shape and t.shape == (10, 10)
        np.testing.assert_allclose(t.sum(axis=1), 1, rtol=1e-12)
        own, j = partners(t, labels)
        assert sorted(j) == list(range(10))
        # every pixel comes from the image itself or from its partner
        from_self = (out == x).all(axis=3)
        from_partner = (out == x[j]).all(axis=3)
        assert (from_self | from_partner).all()
        # the pasted pixels form one box, the same in every image that has another partner
        others = j != np.arange(10)
        moved = ~from_self[others]
        box = moved[0] if len(moved) else np.zeros((h, w), bool)
        assert all(np.array_equal(m, box) for m in moved)
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        if box.any():
            assert box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all() and box.sum() == len(rows) * len(cols)
        area = box.sum() / (h * w)
        # the target weight of the partner is the pasted area fraction, of the image itself the rest
        np.testing.assert_allclose(own[others], 1 - area, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(out[~others], x[~others])
        fractions.append(area)
    assert any(0 < f < 1 for f in fractions) and len(set(fractions)) > 3


def test_cutmix_keeps_input_and_is_deterministic(xp):
    xb, yb, x, _ = mixing_batch(xp)
    a = [to_numpy(v) for v in cutmix(xb, yb, 1.0, rng(3))]
    np.testing.assert_array_equal(to_numpy(xb), x)  # pasted into a copy
    b = [to_numpy(v) for v in cutmix(xb, yb, 1.0, rng(3))]
    ref = cutmix(x, np.asarray(to_numpy(yb)), 1.0, rng(3))
    for u, v, w in zip(a, b, ref):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_allclose(u, w, rtol=1e-12)


# --- augment() -----------------------------------------------------------------------------------------------------


def test_augment_without_mixing_returns_the_labels(xp):
    images = distinct_images(16, h=8, w=8)
    labels = xp.asarray(np.arange(16) % 10)
    x, y = augment(xp.asarray(images), labels, rng(), num_classes=10, mean=MEAN, std=STD)
    assert x.shape == images.shape and x.dtype == np.float32 and module_name(x) == xp.__name__
    np.testing.assert_array_equal(to_numpy(y), np.arange(16) % 10)
    assert y.dtype == labels.dtype and y.ndim == 1
    # crop, then flip, then normalise: the same draws in the same order
    r = rng()
    expected = normalize(random_flip(random_crop(images, 4, r), r), MEAN, STD)
    np.testing.assert_allclose(to_numpy(x), expected, rtol=1e-6)
    # with mixing switched on but never drawn, still the labels
    _, y = augment(xp.asarray(images), labels, rng(), num_classes=10, mean=MEAN, std=STD, mixup_alpha=0.5,
                   cutmix_alpha=0.5, mix_prob=0.0)  # fmt: skip
    np.testing.assert_array_equal(to_numpy(y), np.arange(16) % 10)


def test_augment_off_is_normalize(xp):
    images = distinct_images(4, h=8, w=8)
    x, _ = augment(xp.asarray(images), xp.asarray(np.zeros(4, np.int64)), rng(), num_classes=10, mean=MEAN, std=STD,
                   crop_padding=0, flip=False, dtype=np.float64)  # fmt: skip
    assert x.dtype == np.float64
    np.testing.assert_allclose(to_numpy(x), normalize(images, MEAN, STD, np.float64), rtol=1e-13)


@pytest.mark.parametrize("mixing", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}],
                         ids=["mixup", "cutmix", "both"])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augment_with_mixing_returns_probabilities(xp, mixing, dtype):
    images = xp.asarray(distinct_images(16, h=8, w=8))
    labels = xp.asarray(np.arange(16) % 10)
    for seed in range(3):
        x, t = augment(images, labels, rng(seed), num_classes=10, mean=MEAN, std=STD, mix_prob=1.0, dtype=dtype,
                       **mixing)  # fmt: skip
        assert x.shape == (16, 8, 8, 3) and x.dtype == dtype
        assert t.shape == (16, 10) and t.dtype == dtype and module_name(t) == xp.__name__
        t = to_numpy(t)
        np.testing.assert_allclose(t.sum(axis=1), 1, rtol=1e-6)
        assert (t >= 0).all() and (t <= 1).all()
        # each row keeps weight on its own label (λ > 0 almost surely) and on at most one other
        assert (t[np.arange(16), np.arange(16) % 10] > 0).all()
        assert ((t > 0).sum(axis=1) <= 2).all()


def test_augment_is_deterministic_and_same_on_every_backend(xp):
    images = distinct_images(16, h=8, w=8)
    labels = np.arange(16) % 10
    kw = {"num_classes": 10, "mean": MEAN, "std": STD, "mixup_alpha": 0.3, "cutmix_alpha": 1.0, "mix_prob": 0.5}
    runs = [[to_numpy(a) for a in augment(xp.asarray(images), xp.asarray(labels), rng(s), **kw)] for s in (1, 1, 2)]
    ref = augment(images, labels, rng(1), **kw)
    for u, v, w in zip(runs[0], runs[1], ref):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_allclose(u, w, rtol=1e-6)
    assert not np.array_equal(runs[0][0], runs[2][0])


# --- epoch_batches -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, batch_size", [(103, 10), (100, 10), (7, 7), (5, 1)])
def test_epoch_batches_cover_each_index_once(n, batch_size):
    batches = epoch_batches(n, batch_size, rng(0))
    assert len(batches) == n // batch_size
    assert all(len(b) == batch_size and b.dtype.kind == "i" for b in batches)
    seen = np.concatenate(batches)
    assert len(np.unique(seen)) == len(seen) == (n // batch_size) * batch_size  # each at most once
    assert seen.min() >= 0 and seen.max() < n
    if n % batch_size == 0:
        assert sorted(seen) == list(range(n))


def test_epoch_batches_drop_a_partial_batch():
    assert epoch_batches(9, 10, rng()) == []
    batches = epoch_batches(25, 10, rng())
    assert [len(b) for b in batches] == [10, 10]


def test_epoch_batches_shuffle_by_seed():
    a = np.concatenate(epoch_batches(1000, 100, rng(1)))
    b = np.concatenate(epoch_batches(1000, 100, rng(1)))
    c = np.concatenate(epoch_batches(1000, 100, rng(2)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and sorted(a) == sorted(c) == list(range(1000))
    assert not np.array_equal(a, np.arange(1000))  # shuffled, not in order
    # successive epochs from one generator differ too
    r = rng(3)
    assert not np.array_equal(np.concatenate(epoch_batches(100, 10, r)), np.concatenate(epoch_batches(100, 10, r)))


def test_resize_bilinear():
    from minivit.data.resize import resize

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    assert resize(images, 32) is images  # the same size: nothing to do
    bigger = resize(images, 48)
    assert bigger.shape == (3, 48, 48, 3) and bigger.dtype == np.uint8
    assert (resize(np.full((1, 32, 32, 3), 77, np.uint8), 48) == 77).all()  # a flat image stays flat
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8)[None, :, None], (32, 1, 3))[None]  # 0, 8, ..., 248
    row = resize(ramp, 64)[0, 0, :, 0].astype(int)
    assert (np.diff(row)[1:-1] == 4).all()  # twice the pixels: half the step, away from the clamped edges
    with pytest.raises(ValueError, match="expected uint8 images"):
        resize(images.astype(np.float32), 48)
