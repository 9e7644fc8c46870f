"""The linear probe: scikit-learn's LogisticRegression as the oracle, separable data, the choice of λ
on held-out training data, and the features of every layer."""

import numpy as np
import pytest

from minivit import backend
from minivit.models import IGPT
from minivit.probe import LinearProbe, best_layer, choose_l2, few_labels, layer_features, probe_layers


def blobs(n, features, classes, spread, seed=0):
    """n points around `classes` random centres (unit normal), with noise of std `spread`."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, features)) * 3
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.standard_normal((n, features)) * spread, labels


def test_matches_scikit_learn():
    """The same objective: sklearn minimises ½||W||² + C Σ_n CE_n, ours (1/N) Σ_n CE_n + (λ/2)||W||², the
    same minimiser for λ = 1/(C N); both leave the bias unpenalised. Compared on standardised features."""
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn (the oracle) is not installed")
    x, y = blobs(300, 5, 3, spread=4.0)  # overlapping classes: the penalty matters
    probe = LinearProbe(l2=0.05, tol=1e-10).fit(x, y)
    z = (x - probe.mean) / probe.scale
    oracle = sklearn.LogisticRegression(C=1 / (0.05 * len(x)), tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(probe.weight, oracle.coef_.T, atol=1e-5)
    # softmax ignores a shift shared by all biases, so compare them with their mean removed
    np.testing.assert_allclose(probe.bias - probe.bias.mean(), oracle.intercept_ - oracle.intercept_.mean(), atol=1e-5)
    assert (probe.predict(x) == oracle.predict(z)).all()
    assert probe.converged


def test_separable_data_is_classified_perfectly():
    x, y = blobs(600, 8, 4, spread=0.3)
    probe = LinearProbe(l2=1e-4).fit(x[:400], y[:400])
    assert probe.accuracy(x[:400], y[:400]) == 1.0 and probe.accuracy(x[400:], y[400:]) == 1.0


def test_stronger_penalty_shrinks_the_weights():
    x, y = blobs(300, 5, 3, spread=2.0)
    norms = [np.linalg.norm(LinearProbe(l2).fit(x, y).weight) for l2 in (1e-4, 1e-2, 1.0)]
    assert norms[0] > norms[1] > norms[2]


def test_l2_is_chosen_on_the_held_out_examples_only():
    """The held-out part is the last `holdout` training examples: relabelling them changes the choice
    of λ, relabelling nothing else (there is no test set in the call at all)."""
    x, y = blobs(400, 10, 3, spread=3.0, seed=1)
    grid = (1e-4, 1e-2, 1.0, 100.0)
    best, scores = choose_l2(x, y, holdout=100, grid=grid)
    assert set(scores) == set(grid) and scores[best] == max(scores.values())
    assert scores[100.0] < max(scores.values())  # a penalty this strong leaves little to classify with
    shuffled = y.copy()
    shuffled[-100:] = np.random.default_rng(0).permutation(y[-100:])
    assert choose_l2(x, shuffled, holdout=100, grid=grid)[1] != scores


@pytest.mark.parametrize("holdout", [0, 400])
def test_holdout_must_leave_examples_on_both_sides(holdout):
    x, y = blobs(400, 3, 2, spread=1.0)
    with pytest.raises(ValueError, match="holdout must be between 1 and 399"):
        choose_l2(x, y, holdout)


def test_bad_input_is_a_clear_error():
    x, y = blobs(50, 3, 2, spread=1.0)
    with pytest.raises(ValueError, match="labels must be 50 integer class ids"):
        LinearProbe().fit(x, y.astype(float))
    with pytest.raises(ValueError, match="features must have shape"):
        LinearProbe().fit(x[:, :, None], y)
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        LinearProbe(l2=-1.0)


def test_probe_layers_reports_every_layer():
    x, y = blobs(500, 6, 3, spread=1.5)
    noise = np.random.default_rng(1).standard_normal(x.shape)
    layers = np.stack([noise, x])  # layer 0: no signal, layer 1: the classes
    rows = probe_layers(layers[:, :400], y[:400], layers[:, 400:], y[400:], holdout=100, grid=(1e-3, 1e-1))
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[0]["test_accuracy"] < 0.6 < 0.9 < rows[1]["test_accuracy"]
    assert all(r["l2"] in (1e-3, 1e-1) for r in rows)


def test_layer_features_in_batches_equal_one_batch(xp):
    backend.seed(0)
    model = IGPT(image_size=3, vocab_size=7, dim=8, depth=2, heads=2, mlp_dim=12).to(dtype=np.float64)
    ids = xp.asarray(np.random.default_rng(0).integers(0, 7, (10, 9)))
    features = layer_features(model, ids, batch_size=3)
    assert features.shape == (3, 10, 8) and isinstance(features, np.ndarray)
    whole = backend.to_numpy(model.layer_features(ids))
    np.testing.assert_allclose(features, whole, rtol=1e-6)  # float32 copies of float64 features
    probe = LinearProbe().fit(xp.asarray(features[-1]), xp.asarray(np.arange(10) % 2))  # CuPy input is moved
    assert probe.weight.shape == (8, 2)


def test_the_best_layer_is_chosen_on_held_out_accuracy_never_on_test_accuracy():
    """Rows whose test accuracies rank the layers the other way round: the choice follows the held-out
    accuracy (an earlier layer on a tie); swapping the test accuracies changes nothing."""
    rows = [{"layer": 0, "holdout_accuracy": 0.40, "test_accuracy": 0.50},
            {"layer": 1, "holdout_accuracy": 0.45, "test_accuracy": 0.30},
            {"layer": 2, "holdout_accuracy": 0.45, "test_accuracy": 0.20}]  # fmt: skip
    assert best_layer(rows)["layer"] == 1
    swapped = [{**r, "test_accuracy": 1 - r["test_accuracy"]} for r in rows]
    assert best_layer(swapped)["layer"] == 1
    x, y = blobs(500, 6, 3, spread=1.5)
    noise = np.random.default_rng(1).standard_normal(x.shape)
    rows = probe_layers(np.stack([noise, x])[:, :400], y[:400], np.stack([noise, x])[:, 400:], y[400:], holdout=100,
                        grid=(1e-3, 1e-1))  # fmt: skip
    assert best_layer(rows)["layer"] == 1 and rows[1]["holdout_accuracy"] > rows[0]["holdout_accuracy"]


def test_few_labels_draws_that_many_of_each_class_and_learns_more_from_more(monkeypatch):
    x, y = blobs(2000, 20, 5, spread=3.5, seed=1)  # overlapping: a handful of labels is not enough
    fitted = []
    real_fit = LinearProbe.fit
    monkeypatch.setattr(LinearProbe, "fit", lambda self, f, labels, *a, **k: fitted.append(np.bincount(labels, minlength=5))
                        or real_fit(self, f, labels, *a, **k))  # fmt: skip
    scores = few_labels(x[:1500], y[:1500], x[1500:], y[1500:], per_class=(1, 5, 100), l2=1e-2, draws=4, seed=0)
    assert list(scores) == [1, 5, 100] and all(len(s) == 4 for s in scores.values())
    assert [f.tolist() for f in fitted] == [[1] * 5] * 4 + [[5] * 5] * 4 + [[100] * 5] * 4
    assert np.mean(scores[1]) < np.mean(scores[5]) < np.mean(scores[100])
    assert len(set(scores[1])) > 1, "each draw is another set of labelled examples"
    again = few_labels(x[:1500], y[:1500], x[1500:], y[1500:], per_class=(1, 5, 100), l2=1e-2, draws=4, seed=0)
    assert again == scores  # seeded
    with pytest.raises(ValueError, match=r"per_class must be between 1 and \d+ \(the fewest examples of a class\)"):
        few_labels(x[:100], y[:100], x[1500:], y[1500:], per_class=(1000,), l2=1e-2)
