"""iGPT's colour palette: k-means, nearest-centre ids, round trips, OpenAI's file layout, downsampling."""

import numpy as np
import pytest

from minivit import backend
from minivit.data.palette import Palette, downsample


def clustered(xp, centres, per=400, noise=3.0, seed=0):
    """uint8 pixels (as a (1, n, 3) image) scattered around the given RGB centres."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float64)
    pixels = centres[rng.integers(0, len(centres), per * len(centres))] + rng.normal(0, noise, (per * len(centres), 3))
    return xp.asarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[None])


SEPARATED = [(20, 20, 20), (230, 30, 40), (30, 200, 60), (40, 50, 220), (240, 240, 230), (128, 128, 10)]


def test_kmeans_recovers_well_separated_clusters(xp):
    palette = Palette.fit(clustered(xp, SEPARATED), k=len(SEPARATED), seed=0)
    found = np.array(sorted(map(tuple, backend.to_numpy(palette.centers))))
    np.testing.assert_allclose(found, np.array(sorted(SEPARATED), dtype=np.float64), atol=1.0)


def test_fit_is_deterministic_by_seed(xp):
    images = xp.asarray(np.random.default_rng(1).integers(0, 256, (20, 8, 8, 3)).astype(np.uint8))
    a, b = (backend.to_numpy(Palette.fit(images, k=16, seed=3, sample_size=500).centers) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = backend.to_numpy(Palette.fit(images, k=16, seed=4, sample_size=500).centers)
    assert not np.array_equal(a, c)


def test_more_centres_than_colours_leaves_no_nan(xp):
    """Three colours and k = 5: k-means++ must repeat a colour, a repeated centre gets no pixels, and
    the empty cluster is re-seeded rather than divided by zero."""
    palette = Palette.fit(clustered(xp, SEPARATED[:3], noise=0.0), k=5, seed=0)
    centers = backend.to_numpy(palette.centers)
    assert np.isfinite(centers).all()
    for colour in SEPARATED[:3]:
        assert np.abs(centers - colour).sum(axis=1).min() == 0, f"colour {colour} lost"


def test_quantize_picks_the_nearest_centre(xp):
    rng = np.random.default_rng(2)
    palette = Palette(xp.asarray(rng.uniform(0, 255, (37, 3))))
    images = rng.integers(0, 256, (4, 9, 7, 3)).astype(np.uint8)
    ids = backend.to_numpy(palette.quantize(xp.asarray(images)))
    assert ids.shape == (4, 9, 7) and ids.dtype == np.int16
    brute = ((images[..., None, :].astype(np.float64) - backend.to_numpy(palette.centers)) ** 2).sum(-1)  # (.., K)
    chosen = np.take_along_axis(brute, ids[..., None].astype(np.int64), axis=-1)[..., 0]
    np.testing.assert_allclose(chosen, brute.min(axis=-1), rtol=1e-5, atol=1e-3)  # ties may go either way
    gap = np.sort(brute, axis=-1)[..., 1] - brute.min(axis=-1)
    clear = gap > 1e-2
    np.testing.assert_array_equal(ids[clear], brute.argmin(axis=-1)[clear])
    single = backend.to_numpy(palette.quantize(xp.asarray(images[0])))  # one (H, W, 3) image
    np.testing.assert_array_equal(single, ids[0])


def test_dequantize_round_trips_on_the_centres(xp):
    palette = Palette(xp.asarray(np.array(SEPARATED, dtype=np.float32) + 0.25))
    ids = xp.asarray(np.random.default_rng(3).integers(0, len(SEPARATED), (2, 5, 5)))
    images = palette.dequantize(ids)
    assert images.shape == (2, 5, 5, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(backend.to_numpy(palette.quantize(images)), backend.to_numpy(ids))
    np.testing.assert_array_equal(backend.to_numpy(images[0, 0, 0]), SEPARATED[int(ids[0, 0, 0])])


def test_save_load_and_openai_layout(tmp_path):
    palette = Palette(np.random.default_rng(4).uniform(0, 255, (512, 3)))
    palette.save(tmp_path / "palette.npz")
    np.testing.assert_array_equal(Palette.load(tmp_path / "palette.npz").centers, palette.centers)

    palette.save_openai(tmp_path / "kmeans_centers.npy")
    raw = np.load(tmp_path / "kmeans_centers.npy")
    assert raw.shape == (512, 3) and -1 <= raw.min() and raw.max() <= 1  # pixel / 127.5 - 1
    np.testing.assert_allclose(raw, palette.centers / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(Palette.from_openai(tmp_path / "kmeans_centers.npy").centers, palette.centers,
                               atol=1e-4)  # fmt: skip
    np.save(tmp_path / "pixels.npy", palette.centers)  # (K, 3) in [0, 255]: not OpenAI's layout
    with pytest.raises(ValueError, match=r"OpenAI's layout, \(K, 3\) floats in \[-1, 1\]"):
        Palette.from_openai(tmp_path / "pixels.npy")


def test_downsample_is_an_area_average(xp):
    image = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    image[0, :2, :2] = 100  # the top-left 2×2 block
    image[0, 0, 3] = 255  # one bright pixel in the top-right block: its mean is 63.75
    small = backend.to_numpy(downsample(xp.asarray(image), 2))
    assert small.shape == (1, 2, 2, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small[0, :, :, 0], [[100, 64], [0, 0]])
    np.testing.assert_array_equal(backend.to_numpy(downsample(xp.asarray(image[0]), 4)), image[0])  # same size
    with pytest.raises(ValueError, match="2 must divide both"):
        downsample(xp.asarray(np.zeros((5, 4, 3), np.uint8)), 2)


def test_bad_inputs_are_clear_errors():
    palette = Palette(np.array(SEPARATED))
    with pytest.raises(ValueError, match=r"uint8 RGB images \(\.\.\., 3\)"):
        palette.quantize(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"uint8 RGB images"):
        Palette.fit(np.zeros((2, 2, 4), dtype=np.uint8), k=2)
    with pytest.raises(ValueError, match="k must be between 1 and the 4 pixels"):
        Palette.fit(np.zeros((2, 2, 3), dtype=np.uint8), k=5)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 6\)"):
        palette.dequantize(np.array([0, 6]))
    with pytest.raises(ValueError, match="must be integers"):
        palette.dequantize(np.array([0.0]))
    with pytest.raises(ValueError, match=r"\(K, 3\) RGB"):
        Palette(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"in \[0, 255\]"):
        Palette(np.full((4, 3), 300.0))
