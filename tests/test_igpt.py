"""iGPT: gradients through the loss, causality, the key/value cache, generation, and bad input."""

import numpy as np
import pytest
from helpers import assert_close

from minivit import backend, ops
from minivit.gradcheck import numerical_gradient, relative_error
from minivit.models import IGPT, IGPTClassifier, IGPTConfig
from minivit.models.igpt import preset

pytestmark = pytest.mark.usefixtures("op_path")  # the plain ops and the CPU kernels alike


def small(xp, image_size=3, vocab_size=7, dim=8, depth=2, heads=2, mlp_dim=12, dropout=0.0, seed=0, classes=0):
    """A tiny iGPT in float64 on xp's backend with random values in every parameter (no special 0 or 1);
    with classes > 0 an IGPTClassifier."""
    backend.seed(seed)
    extra = {"num_classes": classes} if classes else {}
    model = (IGPTClassifier if classes else IGPT)(image_size, vocab_size, dim, depth, heads, mlp_dim, dropout, **extra)
    model.to(dtype=np.float64)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = xp.asarray(rng.standard_normal(p.shape) * 0.5)
    return model


def tokens(xp, b, t, k, seed=1):
    return xp.asarray(np.random.default_rng(seed).integers(0, k, size=(b, t)))


def loss_of(model, ids):
    """Mean next-pixel cross-entropy (nats per token) and its cache."""
    logits = model(ids)  # (B, T, K)
    return ops.cross_entropy_forward(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))


@pytest.mark.parametrize(
    "b, t, heads, dropout",
    [(2, 9, 2, 0.0), (1, 1, 1, 0.0), (3, 5, 1, 0.0), (2, 7, 2, 0.2)],
    ids=["full-image", "one-token", "odd-T-one-head", "dropout"],
)
def test_gradients_through_the_loss(xp, b, t, heads, dropout):
    model = small(xp, heads=heads, dropout=dropout)
    ids = tokens(xp, b, t, model.config.vocab_size)

    def loss():
        backend.seed(3)  # the same dropout masks on every forward
        return loss_of(model, ids)[0]

    backend.seed(3)
    _, cache = loss_of(model, ids)
    model.zero_grad()
    assert model.backward(ops.cross_entropy_backward(cache).reshape(b, t, -1)) is None
    errors = {name: relative_error(p.grad, numerical_gradient(loss, p.data)) for name, p in model.named_parameters()}
    assert {"tok_embed.weight", "sos", "pos_embed", "norm.weight", "head.weight", "blocks.1.attn.qkv.weight"} <= set(
        errors)
    assert_close(errors)


@pytest.mark.parametrize(
    "b, t, heads, gen_weight", [(2, 9, 2, 0.7), (3, 5, 1, 0.0), (2, 1, 2, 1.0)], ids=["joint", "clf-only", "one-token"]
)
def test_classifier_gradients_through_the_joint_loss(xp, b, t, heads, gen_weight):
    """L = L_CLF + w L_GEN (Sec. 3.4); with w = 0 the generative head gets no gradient (dlogits None)."""
    model = small(xp, heads=heads, classes=4)
    ids = tokens(xp, b, t, model.config.vocab_size)
    labels = xp.asarray(np.arange(b) % 4)

    def loss():
        logits, class_logits = model(ids)
        gen = ops.cross_entropy_forward(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))[0]
        return ops.cross_entropy_forward(class_logits, labels)[0] + gen_weight * gen

    logits, class_logits = model(ids)
    assert logits.shape == (b, t, 7) and class_logits.shape == (b, 4)
    _, gen_cache = ops.cross_entropy_forward(logits.reshape(-1, 7), ids.reshape(-1))
    _, clf_cache = ops.cross_entropy_forward(class_logits, labels)
    dlogits = gen_weight * ops.cross_entropy_backward(gen_cache).reshape(logits.shape) if gen_weight else None
    model.zero_grad()
    model.backward(dlogits, ops.cross_entropy_backward(clf_cache))
    errors = {name: relative_error(p.grad, numerical_gradient(loss, p.data)) for name, p in model.named_parameters()
              if gen_weight or not name.startswith("head.")}  # fmt: skip
    assert {"clf_head.weight", "clf_head.bias", "tok_embed.weight", "sos", "blocks.0.attn.qkv.weight"} <= set(errors)
    assert_close(errors)
    if not gen_weight:
        assert float(abs(model.head.weight.grad).max()) == 0.0


def test_classifier_starts_from_the_generative_trunk(xp):
    """A classifier built with the same seed has the same trunk as the iGPT, and a zero head: its first
    class logits are all 0, whatever the image."""
    backend.seed(0)
    igpt = IGPT(image_size=3, vocab_size=7, dim=8, depth=2, heads=2, mlp_dim=12)
    backend.seed(0)
    clf = IGPTClassifier(image_size=3, vocab_size=7, dim=8, depth=2, heads=2, mlp_dim=12, num_classes=5)
    trunk = clf.state_dict()
    assert [trunk.pop(name).any() for name in ("clf_head.weight", "clf_head.bias")] == [False, False]
    assert trunk.keys() == igpt.state_dict().keys()
    assert all(np.array_equal(trunk[name], value) for name, value in igpt.state_dict().items())
    logits, class_logits = clf.to(backend.name())(tokens(xp, 2, 9, 7))
    assert class_logits.shape == (2, 5) and not class_logits.any()
    np.testing.assert_array_equal(backend.to_numpy(logits), backend.to_numpy(igpt.to(backend.name())(tokens(xp, 2, 9, 7))))


def test_layer_features_are_the_normalised_block_inputs_averaged(xp):
    """f_l = mean_i LN_l(h_l)_i with block l's first LayerNorm; f_L = mean_i of the final LN's output,
    which is what the classifier's head reads."""
    model = small(xp, classes=3).eval()
    ids = tokens(xp, 4, 9, 7)
    features = model.layer_features(ids)
    assert features.shape == (3, 4, 8)
    x = model._embed(ids[:, :-1], 0)
    for block, f in zip(model.blocks, features[:-1], strict=True):
        w, b = block.norm1.weight.data, block.norm1.bias.data
        normed = (x - x.mean(axis=-1, keepdims=True)) / xp.sqrt(x.var(axis=-1, keepdims=True) + 1e-6) * w + b
        assert relative_error(f, normed.mean(axis=1)) < 1e-12
        x = block(x)
    _, class_logits = model(ids)
    head = features[-1] @ model.clf_head.weight.data + model.clf_head.bias.data
    assert relative_error(class_logits, head) < 1e-12


def test_causality(xp):
    """Changing token j never changes the logits at positions ≤ j, and does change later ones."""
    model = small(xp).eval()
    ids = tokens(xp, 1, 9, model.config.vocab_size)
    base = backend.to_numpy(model(ids))
    for j in range(9):
        changed = ids.copy()
        changed[0, j] = (int(changed[0, j]) + 1) % model.config.vocab_size
        logits = backend.to_numpy(model(changed))
        np.testing.assert_array_equal(logits[:, : j + 1], base[:, : j + 1], err_msg=f"token {j} leaked backwards")
        if j < 8:
            assert np.abs(logits[:, j + 1 :] - base[:, j + 1 :]).max() > 1e-6, f"token {j} had no effect"


@pytest.mark.parametrize("chunks", [[8], [0] + [1] * 8, [3, 2, 3], [0, 5, 3]],
                         ids=["one-call", "one-by-one", "mixed", "empty-prompt"])  # 9 positions: SOS and 8 ids
def test_cached_logits_equal_the_full_forward(xp, chunks):
    model = small(xp).eval()
    ids = tokens(xp, 2, 9, model.config.vocab_size)
    full = backend.to_numpy(model(ids))
    got, past, n = [], None, 0
    for size in chunks:
        # the first call takes the image's first ids (SOS goes in front); later ones the inputs that follow
        inputs = ids[:, n : n + size] if past is None else ids[:, n - 1 : n - 1 + size]
        logits, past = model.decode(inputs, past)
        got.append(backend.to_numpy(logits))
        n += logits.shape[1]
    got = np.concatenate(got, axis=1)
    assert got.shape == full.shape
    assert relative_error(got, full) < 1e-12


def test_greedy_generation_is_step_by_step_argmax(xp):
    model = small(xp, image_size=4, vocab_size=5).eval()
    prompt = tokens(xp, 3, 5, 5)
    generated = model.generate(prompt, 11, top_k=1)
    assert generated.shape == (3, 16)
    expected = prompt
    for _ in range(11):  # a full forward over everything so far, each time
        nxt = model(xp.concatenate([expected, expected[:, :1]], axis=1))[:, -1].argmax(axis=1)
        expected = xp.concatenate([expected, nxt[:, None].astype(expected.dtype)], axis=1)
    np.testing.assert_array_equal(backend.to_numpy(generated), backend.to_numpy(expected))


def test_sampling(xp):
    model = small(xp, image_size=4, vocab_size=6)
    empty = xp.zeros((2, 0), dtype=np.int64)
    a = model.generate(empty, 16, rng=np.random.default_rng(0))
    b = model.generate(empty, 16, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))  # a seed repeats
    assert a.shape == (2, 16) and int(a.min()) >= 0 and int(a.max()) < 6
    assert model.training  # generate() restores the mode it found
    top2 = backend.to_numpy(model.generate(empty, 16, top_k=2, temperature=0.5, rng=np.random.default_rng(1)))
    assert top2.shape == (2, 16)
    # with a huge temperature the distribution is nearly uniform: many different ids appear
    hot = backend.to_numpy(model.generate(xp.zeros((8, 0), dtype=np.int64), 16, temperature=1e6,
                                          rng=np.random.default_rng(2)))  # fmt: skip
    assert len(np.unique(hot)) == 6


def test_presets_and_state_dict():
    cpu = IGPT.from_preset("cpu")
    assert cpu.config == IGPTConfig() and cpu.num_tokens == 256
    assert preset("gpu").image_size == 32 and preset("cpu", image_size=8).image_size == 8
    with pytest.raises(ValueError, match="unknown iGPT preset"):
        preset("huge")
    names = list(cpu.state_dict())
    assert names[:3] == ["tok_embed.weight", "sos", "pos_embed"] and names[-2:] == ["head.weight", "head.bias"]
    assert cpu.state_dict()["pos_embed"].shape == (1, 256, 128)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: np.zeros((1, 4)), "must be an integer array"),
        (lambda: np.zeros(4, dtype=np.int64), r"shape \(B, T\)"),
        (lambda: np.zeros((1, 17), dtype=np.int64), "17 tokens, more than the 16"),
        (lambda: np.full((1, 4), 5), r"palette ids in \[0, 5\)"),
        (lambda: np.full((1, 4), -1), r"palette ids in \[0, 5\)"),
    ],
)
def test_bad_tokens_are_clear_errors(make, message):
    model = IGPT(image_size=4, vocab_size=5, dim=8, depth=1, heads=2, mlp_dim=8)
    with pytest.raises(ValueError, match=message):
        model(make())


def test_bad_generation_arguments_are_clear_errors():
    model = IGPT(image_size=4, vocab_size=5, dim=8, depth=1, heads=2, mlp_dim=8)
    prompt = np.zeros((1, 10), dtype=np.int64)
    with pytest.raises(ValueError, match="plus num_tokens 7"):
        model.generate(prompt, 7)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 1, top_k=6)
    with pytest.raises(ValueError, match="prompt must be an integer array"):
        model.generate(prompt.astype(np.float32), 1)
