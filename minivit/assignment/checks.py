"""The grader's checks: each part of an item as a function of one seed, returning the outputs to compare.

A check draws fresh inputs from its seed, calls the code a student writes and returns what came out,
{name: array, or None where the answer must be None}. The grader (grade.py) runs it twice on the
same seed: in its own process on the reference solution, before any student code runs, and in a
child process on a throwaway copy that holds the student's answer (worker.py). Only arrays come
back from the child, and the parent compares them, in float64, at a tolerance a central-difference
gradient does not meet.

The inputs are large enough that differentiating numerically (one forward per input element) takes
far longer than the part's time limit, where the op allows it (an elementwise op does not).
Everything runs on NumPy in float64 with the CPU kernels off (the plain ops a student writes).
"""

import numpy as np

from .. import ops
from ..models.igpt import IGPT
from ..models.vit import ViT
from ..nn.module import Parameter
from ..nn.transformer import Block
from ..optim import AdamW

TOLERANCE = 1e-10  # relative: max|a - b| / max(|a| + |b|) over the array


def _normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _randomized(module, rng, scale=0.5):
    """The module in float64 with random values in every parameter (no special 0 or 1 hides a bug)."""
    module.to(dtype=np.float64)
    for p in module.parameters():
        p.data[...] = _normal(rng, *p.data.shape, scale=scale)
    return module


def _grads(module, prefix):
    return {f"{prefix}.{name}": p.grad for name, p in module.named_parameters()}


# -- A1 ---------------------------------------------------------------------------------------------


def patchify(seed):
    rng = np.random.default_rng(seed)
    return {"patches": ops.patchify(_normal(rng, 3, 8, 12, 3), 4), "patches (P = 1)": ops.patchify(
        _normal(rng, 2, 3, 5, 2), 1), "patches (H, W, C)": ops.patchify(_normal(rng, 6, 6, 1), 3)}  # fmt: skip


def unpatchify(seed):
    rng = np.random.default_rng(seed)
    return {"images": ops.unpatchify(_normal(rng, 3, 6, 48), 4, (8, 12)),
            "images (H, W, C)": ops.unpatchify(_normal(rng, 4, 9), 3, 6)}  # fmt: skip


def linear_backward(seed):
    rng = np.random.default_rng(seed)
    x, w, b = _normal(rng, 16, 64, 96), _normal(rng, 96, 80), _normal(rng, 80)
    dx, dw, db = ops.linear_backward(_normal(rng, 16, 64, 80), ops.linear_forward(x, w, b)[1])
    x2, w2 = _normal(rng, 5, 7), _normal(rng, 7, 3)
    dx2, dw2, db2 = ops.linear_backward(_normal(rng, 5, 3), ops.linear_forward(x2, w2, None)[1])
    return {"dx": dx, "dw": dw, "db": db, "dx (no bias)": dx2, "dw (no bias)": dw2, "db (no bias)": db2}


# -- A2 ---------------------------------------------------------------------------------------------


def layernorm_backward(seed):
    rng = np.random.default_rng(seed)
    x = _normal(rng, 32, 65, 128, scale=2.0) + 1.0
    gamma, beta = _normal(rng, 128), _normal(rng, 128)
    dx, dgamma, dbeta = ops.layernorm_backward(_normal(rng, *x.shape), ops.layernorm_forward(x, gamma, beta)[1])
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def _gelu(seed, approximate):
    rng = np.random.default_rng(seed)
    x = _normal(rng, 64, 257, scale=2.5)  # the curved region around 0 and both tails
    return {"dx": ops.gelu_backward(_normal(rng, *x.shape), ops.gelu_forward(x, approximate=approximate)[1])}


def gelu_exact(seed):
    return _gelu(seed, approximate=False)


def gelu_tanh(seed):
    return _gelu(seed, approximate=True)


# -- A3 ---------------------------------------------------------------------------------------------


def softmax_backward(seed):
    rng = np.random.default_rng(seed)
    found = {}
    for shape, axis in (((64, 65, 65), -1), ((33, 17), 0), ((4, 9, 5), 1)):
        x = _normal(rng, *shape, scale=3.0)
        found[f"dx {shape} axis {axis}"] = ops.softmax_backward(_normal(rng, *shape), ops.softmax_forward(x, axis)[1])
    return found


def _attention(seed, causal, relative):
    rng = np.random.default_rng(seed)
    b, t, d, heads = 8, 33, 48, 4
    inputs = [_normal(rng, b, t, d), _normal(rng, d, 3 * d, scale=0.3), _normal(rng, 3 * d),
              _normal(rng, d, d, scale=0.3), _normal(rng, d)]  # fmt: skip
    rel = _normal(rng, 2 * t - 1, d, scale=0.3) if relative else None
    out, cache = ops.attention_forward(*inputs, num_heads=heads, causal=causal, rel=rel)
    grads = ops.attention_backward(_normal(rng, *out.shape), cache)
    names = ("dx", "dw_qkv", "db_qkv", "dw_out", "db_out", "drel")[: 5 + relative]
    if len(grads) != len(names):
        raise ValueError(f"attention_backward returned {len(grads)} gradients, expected {len(names)}: {names}")
    return dict(zip(names, grads))


def attention_full(seed):
    return _attention(seed, causal=False, relative=False)


def attention_causal(seed):
    return _attention(seed, causal=True, relative=False)


def attention_relative(seed):
    found = _attention(seed, causal=False, relative=True)
    found.update({f"{k} (causal)": v for k, v in _attention(seed + 1, causal=True, relative=True).items()})
    return found


def cross_entropy_backward(seed):
    rng = np.random.default_rng(seed)
    b, k = 256, 10
    logits = _normal(rng, b, k, scale=3.0)
    hard, soft = rng.integers(0, k, size=b), rng.dirichlet(np.ones(k), size=b)
    return {f"dlogits ({name}, smoothing {eps})": ops.cross_entropy_backward(
                ops.cross_entropy_forward(logits, labels, eps)[1])
            for name, labels in (("labels", hard), ("probabilities", soft)) for eps in (0.0, 0.1)}  # fmt: skip


# -- A4 ---------------------------------------------------------------------------------------------


def _block(rng, causal):
    return _randomized(Block(dim=24, heads=3, mlp_dim=48, causal=causal), rng)


def block_forward(seed):
    rng = np.random.default_rng(seed)
    return {f"out ({kind})": _block(rng, kind == "causal").forward(_normal(rng, 4, 17, 24))
            for kind in ("full", "causal")}  # fmt: skip


def block_backward(seed):
    rng = np.random.default_rng(seed)
    found = {}
    for kind in ("full", "causal"):
        block = _block(rng, kind == "causal")
        out = block.forward(_normal(rng, 4, 17, 24))
        block.zero_grad()
        found[f"dx ({kind})"] = block.backward(_normal(rng, *out.shape))
        found.update(_grads(block, kind))
    return found


def _vit(rng, pool):
    return _randomized(ViT(image_size=8, patch_size=2, num_classes=5, dim=16, depth=2, heads=2, mlp_dim=32,
                           pool=pool), rng, scale=0.3)  # fmt: skip


def vit_forward(seed):
    rng = np.random.default_rng(seed)
    return {f"logits ({pool})": _vit(rng, pool).forward(_normal(rng, 3, 8, 8, 3)) for pool in ("cls", "mean")}


def vit_backward(seed):
    rng = np.random.default_rng(seed)
    found = {}
    for pool in ("cls", "mean"):
        vit = _vit(rng, pool)
        logits = vit.forward(_normal(rng, 3, 8, 8, 3))
        vit.zero_grad()
        found[f"dimages ({pool})"] = vit.backward(_normal(rng, *logits.shape))
        found.update(_grads(vit, pool))
    return found


def adamw_update(seed):
    """Five steps on a parameter that decays and one that does not, with a new gradient each step."""
    rng = np.random.default_rng(seed)
    params = [Parameter(_normal(rng, 6, 5)), Parameter(_normal(rng, 5), decay=False)]
    opt = AdamW(params, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    for _ in range(5):
        for p in params:
            p.grad = _normal(rng, *p.data.shape)
        opt.step()
    return {"weight": params[0].data, "bias": params[1].data}


# -- A5 ---------------------------------------------------------------------------------------------


def kmeans(seed):
    """Clusters far apart, so the same update finds the same centres whatever order it sums in."""
    from ..data.palette import Palette

    rng = np.random.default_rng(seed)
    means = rng.choice(np.arange(20, 236, 27), size=(6, 3))
    pixels = means[rng.integers(0, 6, 3000)] + rng.integers(-6, 7, (3000, 3))
    centers = Palette.fit(pixels.reshape(1, 50, 60, 3).astype(np.uint8), k=6, seed=int(seed % 1000)).centers
    return {"centers": centers.astype(np.float64)}


def embedding_backward(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50, size=(16, 64))  # many repeats
    _, cache = ops.embedding_forward(ids, _normal(rng, 50, 32))
    return {"dweight": ops.embedding_backward(_normal(rng, 16, 64, 32), cache)}


def _igpt(rng):
    return _randomized(IGPT(image_size=4, vocab_size=9, dim=16, depth=2, heads=2, mlp_dim=32), rng, scale=0.4)


def decode(seed):
    """attention_decode and Block.decode, through IGPT.decode: a prefix, then tokens in two more calls."""
    rng = np.random.default_rng(seed)
    x, w_qkv, b_qkv, w_out, b_out = (_normal(rng, 2, 7, 12), _normal(rng, 12, 36, scale=0.4), _normal(rng, 36),
                                     _normal(rng, 12, 12, scale=0.4), _normal(rng, 12))  # fmt: skip
    found, past = {}, None
    for start, stop in ((0, 3), (3, 4), (4, 7)):
        found[f"attention_decode out [{start}:{stop}]"], past = ops.attention_decode(
            x[:, start:stop], w_qkv, b_qkv, w_out, b_out, 3, past
        )
    found["attention_decode keys"], found["attention_decode values"] = past
    igpt, ids = _igpt(rng), rng.integers(0, 9, size=(3, 15))
    past = None
    for start, stop in ((0, 5), (5, 6), (6, 15)):
        found[f"IGPT.decode logits [{start}:{stop}]"], past = igpt.decode(ids[:, start:stop], past)
    return found


def generate(seed):
    rng = np.random.default_rng(seed)
    igpt, prompt = _igpt(rng), rng.integers(0, 9, size=(4, 3))
    return {f"ids ({how})": igpt.generate(prompt, 12, top_k=top_k, temperature=temperature,
                                          rng=np.random.default_rng(seed + 1)).astype(np.float64)
            for how, top_k, temperature in (("greedy", 1, 1.0), ("sampled", None, 1.0), ("top-3", 3, 0.7))}  # fmt: skip
