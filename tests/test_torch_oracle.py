"""minivit against torch autograd, in float64.

Gradient checks compare each backward with central differences, which are only accurate to
about 1e-8 and cost two forwards per input element. This module uses torch as an independent oracle
instead: every forward is rewritten in a few lines of torch (from the spec, not from minivit's
code), torch's autograd differentiates it, and both forward outputs and every gradient must
match minivit's hand-written ones to a relative error of 1e-5 (in practice ~1e-15). The same is
done for the whole ViT (logits, loss, image gradient and every parameter's gradient, by name) and
for the optimisers (parameters after each AdamW / SGD step).
"""

import math

import numpy as np
import pytest

from minivit import ViT, ops
from minivit.gradcheck import relative_error
from minivit.nn import Parameter
from minivit.optim import SGD, AdamW

torch = pytest.importorskip("torch", reason="torch is the test-only autograd oracle: pip install torch==2.13.0")
F = torch.nn.functional
pytestmark = pytest.mark.usefixtures("op_path")  # the plain ops and the CPU kernels alike

TOL = 1e-5
EPS = 1e-6  # LayerNorm epsilon, everywhere in minivit


def to_t(a, grad=False):
    """A float64 torch copy of a NumPy array; a leaf that records its gradient when grad=True."""
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def to_ids(a):
    """Integer NumPy ids as a torch long tensor."""
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def assert_close(ours, ref, what):
    """minivit's array against torch's (a tensor or NumPy array), by relative error."""
    assert ref is not None, f"{what}: torch computed no gradient"
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().numpy()
    err = relative_error(ours, ref)
    assert err <= TOL, f"{what}: relative error {err:.3g} > {TOL}"


def torch_patchify(images, p):
    """(B, H, W, C) -> (B, N, P*P*C), patches in raster order, each flattened (row, column, channel)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def torch_conv2d(x, w, b, stride, padding):
    """NHWC images and an HWIO kernel through torch's NCHW / OIHW convolution."""
    out = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, stride=stride, padding=padding)
    return out.permute(0, 2, 3, 1)


def torch_attention(x, w_qkv, b_qkv, w_out, b_out, heads, causal=False, rel=None):
    """Multi-head self-attention from the spec; returns out (B, T, D) and the weights (B, H, T, T).
    rel (2T - 1, D): relative attention, the logit of query i and key j gains q_i · rel[i - j + T - 1] / √Dh."""
    b, t, d = x.shape
    dh = d // heads
    qkv = x @ w_qkv + b_qkv  # [q | k | v] column blocks, heads split inside each block
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(b, t, heads, dh).transpose(1, 2) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if rel is not None:  # one offset at a time, written plainly
        keys = rel.reshape(2 * t - 1, heads, dh).transpose(0, 1)  # (H, 2T - 1, Dh)
        bias = torch.stack([torch.stack([(q[:, :, i] * keys[:, i - j + t - 1]).sum(-1) for j in range(t)], -1)
                            for i in range(t)], -2)  # fmt: skip  (B, H, T, T)
        scores = scores + bias / math.sqrt(dh)
    if causal:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    attn = scores.softmax(dim=-1)
    heads_out = (attn @ v).transpose(1, 2).reshape(b, t, d)
    return heads_out @ w_out + b_out, attn


# -- ops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5), (2, 1, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape, bias):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shape), rng.standard_normal((5, 4))
    b = rng.standard_normal(4) if bias else None
    out, cache = ops.linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.linear_backward(dout, cache)

    tx, tw = to_t(x, grad=True), to_t(w, grad=True)
    tb = to_t(b, grad=True) if bias else None
    tout = F.linear(tx, tw.T, tb)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert_close(dw, tw.grad, "dw")
    if bias:
        assert_close(db, tb.grad, "db")
    else:
        assert db is None


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6), (5, 1, 8)])
def test_layernorm(shape):
    rng = np.random.default_rng(1)
    d = shape[-1]
    x, gamma, beta = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(d), rng.standard_normal(d)
    out, cache = ops.layernorm_forward(x, gamma, beta, eps=EPS)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = ops.layernorm_backward(dout, cache)

    tx, tg, tb = to_t(x, grad=True), to_t(gamma, grad=True), to_t(beta, grad=True)
    tout = F.layer_norm(tx, (d,), tg, tb, eps=EPS)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert_close(dgamma, tg.grad, "dgamma")
    assert_close(dbeta, tb.grad, "dbeta")


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(approximate):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5)) * 3
    out, cache = ops.gelu_forward(x, approximate=approximate)
    dout = rng.standard_normal(out.shape)
    dx = ops.gelu_backward(dout, cache)

    tx = to_t(x, grad=True)
    tout = F.gelu(tx, approximate="tanh" if approximate else "none")
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(axis):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5)) * 4
    out, cache = ops.softmax_forward(x, axis=axis)
    dout = rng.standard_normal(out.shape)
    dx = ops.softmax_backward(dout, cache)

    tx = to_t(x, grad=True)
    tout = torch.softmax(tx, dim=axis)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("t", [5, 7])
@pytest.mark.parametrize("b", [1, 2])
def test_attention(b, t, heads, causal):
    rng = np.random.default_rng(4)
    d = 6
    x = rng.standard_normal((b, t, d))
    w_qkv, b_qkv = rng.standard_normal((d, 3 * d)) * 0.5, rng.standard_normal(3 * d) * 0.5
    w_out, b_out = rng.standard_normal((d, d)) * 0.5, rng.standard_normal(d) * 0.5
    out, cache = ops.attention_forward(x, w_qkv, b_qkv, w_out, b_out, heads, causal=causal)
    dout = rng.standard_normal(out.shape)
    grads = ops.attention_backward(dout, cache)

    inputs = [to_t(a, grad=True) for a in (x, w_qkv, b_qkv, w_out, b_out)]
    tout, tattn = torch_attention(*inputs, heads, causal=causal)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(cache.attn, tattn, "attn")
    for name, ours, leaf in zip(("dx", "dw_qkv", "db_qkv", "dw_out", "db_out"), grads, inputs):
        assert_close(ours, leaf.grad, name)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("targets", ["ids", "probs"])
def test_cross_entropy(targets, label_smoothing):
    rng = np.random.default_rng(5)
    b, k = 6, 5
    logits = rng.standard_normal((b, k)) * 3
    if targets == "ids":
        labels = rng.integers(0, k, size=b)
        tlabels = to_ids(labels)
    else:
        labels = rng.dirichlet(np.ones(k), size=b)
        tlabels = to_t(labels)
    loss, cache = ops.cross_entropy_forward(logits, labels, label_smoothing=label_smoothing)
    dlogits = ops.cross_entropy_backward(cache)

    tlogits = to_t(logits, grad=True)
    tloss = F.cross_entropy(tlogits, tlabels, reduction="mean", label_smoothing=label_smoothing)
    tloss.backward()
    assert_close(loss, tloss, "loss")
    assert_close(dlogits, tlogits.grad, "dlogits")


def test_mean_pool():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 4))
    out, cache = ops.mean_pool_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = ops.mean_pool_backward(dout, cache)

    tx = to_t(x, grad=True)
    tout = tx.mean(dim=1)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


@pytest.mark.parametrize("ids_shape", [(7,), (3, 5)])
def test_embedding(ids_shape):
    rng = np.random.default_rng(7)
    vocab = 4  # fewer rows than ids, so ids repeat and the scatter-add must accumulate
    ids, weight = rng.integers(0, vocab, size=ids_shape), rng.standard_normal((vocab, 3))
    assert len(np.unique(ids)) < ids.size
    out, cache = ops.embedding_forward(ids, weight)
    dout = rng.standard_normal(out.shape)
    dweight = ops.embedding_backward(dout, cache)

    tweight = to_t(weight, grad=True)
    tout = F.embedding(to_ids(ids), tweight)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dweight, tweight.grad, "dweight")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout(p):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6, 5))
    out, mask = ops.dropout_forward(x, p, train=True, rng=np.random.default_rng(9))
    assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - p)}  # inverted dropout: kept values scaled
    dout = rng.standard_normal(out.shape)
    dx = ops.dropout_backward(dout, mask)

    tx = to_t(x, grad=True)
    tout = tx * to_t(mask)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


@pytest.mark.parametrize("p, num_prefix", [(0.5, 1), (0.3, 0)])
def test_patch_dropout(p, num_prefix):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 9, 4))
    out, (keep, _) = ops.patch_dropout_forward(x, p, train=True, rng=np.random.default_rng(14), num_prefix=num_prefix)
    dout = rng.standard_normal(out.shape)
    dx = ops.patch_dropout_backward(dout, (keep, x.shape))

    tx = to_t(x, grad=True)
    tout = torch.gather(tx, 1, torch.from_numpy(keep)[..., None].expand(-1, -1, x.shape[2]))  # the kept tokens
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


@pytest.mark.parametrize("x_shape, k, stride, padding",
                         [((2, 7, 7, 3), 3, 1, 1), ((2, 8, 8, 3), 3, 2, 1), ((1, 9, 6, 2), 2, 3, 0)])  # fmt: skip
def test_conv2d(x_shape, k, stride, padding):
    rng = np.random.default_rng(15)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((k, k, x_shape[3], 4)), rng.standard_normal(4)
    out, cache = ops.conv2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.conv2d_backward(dout, cache)

    tx, tw, tb = to_t(x, grad=True), to_t(w, grad=True), to_t(b, grad=True)
    tout = torch_conv2d(tx, tw, tb, stride, padding)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert_close(dw, tw.grad, "dw")
    assert_close(db, tb.grad, "db")


@pytest.mark.parametrize("shape, groups", [((2, 5, 4, 6), 3), ((1, 3, 3, 8), 1), ((2, 2, 2, 4), 4)])
def test_groupnorm(shape, groups):
    """Against torch's nn.GroupNorm on the NCHW view of minivit's NHWC maps."""
    rng = np.random.default_rng(16)
    x, gamma, beta = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape[3]), rng.standard_normal(shape[3])
    out, cache = ops.groupnorm_forward(x, gamma, beta, groups)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = ops.groupnorm_backward(dout, cache)

    tx, tg, tb = to_t(x, grad=True), to_t(gamma, grad=True), to_t(beta, grad=True)
    tout = F.group_norm(tx.permute(0, 3, 1, 2), groups, tg, tb, eps=1e-5).permute(0, 2, 3, 1)
    tout.backward(to_t(dout))
    for name, ours, ref in (("out", out, tout), ("dx", dx, tx.grad), ("dgamma", dgamma, tg.grad),
                            ("dbeta", dbeta, tb.grad)):  # fmt: skip
        assert_close(ours, ref, name)


def test_standardized_convolution():
    """BiT's StdConv2d: the kernel standardised per output channel (biased variance, eps 1e-10), then a
    convolution; written in torch from that definition, minivit's two ops chained against it."""
    rng = np.random.default_rng(17)
    x, w = rng.standard_normal((2, 6, 6, 3)), rng.standard_normal((3, 3, 3, 5)) * 0.1 + 0.05
    what, std_cache = ops.standardize_forward(w)
    out, conv_cache = ops.conv2d_forward(x, what, None, 2, 1)
    dout = rng.standard_normal(out.shape)
    dx, dwhat, _ = ops.conv2d_backward(dout, conv_cache)
    dw = ops.standardize_backward(dwhat, std_cache)

    tx, tw = to_t(x, grad=True), to_t(w, grad=True)
    mean = tw.mean(dim=(0, 1, 2), keepdim=True)
    var = ((tw - mean) ** 2).mean(dim=(0, 1, 2), keepdim=True)
    tout = torch_conv2d(tx, (tw - mean) / torch.sqrt(var + 1e-10), None, 2, 1)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert_close(dw, tw.grad, "dw")


def test_relu():
    rng = np.random.default_rng(18)
    x, dout = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    out, cache = ops.relu_forward(x)
    tx = to_t(x, grad=True)
    tout = F.relu(tx)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(ops.relu_backward(dout, cache), tx.grad, "dx")


@pytest.mark.parametrize("shape, patch", [((2, 8, 8, 3), 4), ((1, 6, 9, 2), 3), ((3, 4, 4, 1), 1), ((2, 4, 4, 3), 4)])
def test_patchify(shape, patch):
    rng = np.random.default_rng(10)
    images = rng.standard_normal(shape)
    out = ops.patchify(images, patch)
    dout = rng.standard_normal(out.shape)
    dimages = ops.patchify_backward(dout, patch, shape[1:3])

    timages = to_t(images, grad=True)
    tout = torch_patchify(timages, patch)
    tout.backward(to_t(dout))
    assert_close(out, tout, "out")
    assert_close(dimages, timages.grad, "dimages")


# -- the whole ViT -----------------------------------------------------------------------------


def torch_linear(x, params, name):
    return x @ params[f"{name}.weight"] + params[f"{name}.bias"]


def torch_layer_norm(x, params, name):
    return F.layer_norm(x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=EPS)


def torch_blocks(x, params, config, causal=False, pos=None):
    """config.depth pre-LN blocks (Eq. 2-3), then the final LayerNorm `norm`. pos: a (T, D) table to add
    at each block's input, one per block (the ViT's pos_place "every-layer" variants), or None."""
    for i in range(config.depth):
        blk = f"blocks.{i}"
        if pos is not None:
            x = x + pos[i]
        attn, _ = torch_attention(
            torch_layer_norm(x, params, f"{blk}.norm1"),
            params[f"{blk}.attn.qkv.weight"], params[f"{blk}.attn.qkv.bias"],
            params[f"{blk}.attn.proj.weight"], params[f"{blk}.attn.proj.bias"],
            config.heads, causal, params.get(f"{blk}.attn.rel"),
        )
        x = x + attn
        hidden = F.gelu(torch_linear(torch_layer_norm(x, params, f"{blk}.norm2"), params, f"{blk}.mlp.fc1"))
        x = x + torch_linear(hidden, params, f"{blk}.mlp.fc2")
    return torch_layer_norm(x, params, "norm")


def torch_vit(images, params, config):
    """The ViT forward (Eq. 1-4 and the head) in torch, from the parameters by state_dict name."""

    def linear(x, name):
        return torch_linear(x, params, name)

    def layer_norm(x, name):
        return torch_layer_norm(x, params, name)

    x = images
    for i in range(config.stem):  # the hybrid's stem: conv, LayerNorm over channels, GELU
        conv = torch_conv2d(x, params[f"stem.{3 * i}.weight"], params[f"stem.{3 * i}.bias"], stride=2, padding=1)
        x = F.gelu(layer_norm(conv, f"stem.{3 * i + 1}"))
    x = linear(torch_patchify(x, config.patch_size), "patch_embed")
    if config.pool == "cls":
        x = torch.cat([params["cls_token"].expand(x.shape[0], 1, config.dim), x], dim=1)
    if config.pos_embed == "1d":
        table = params["pos_embed"]  # (L_p, T, D)
    elif config.pos_embed == "2d":  # patch (r, c): [row r; column c]; the class token: 0
        tables, g, half = params["pos_row"].shape
        table = torch.cat([params["pos_row"][:, :, None].expand(tables, g, g, half),
                           params["pos_col"][:, None, :].expand(tables, g, g, half)], dim=-1).reshape(tables, g * g, -1)
        if config.pool == "cls":
            table = torch.cat([torch.zeros(tables, 1, config.dim, dtype=table.dtype), table], dim=1)
    else:  # none, or relative (its keys live in the blocks)
        table = torch.zeros(1, x.shape[1], config.dim, dtype=x.dtype)
    if config.pos_place == "input":
        x = torch_blocks(x + table[0], params, config)
    else:
        x = torch_blocks(x, params, config, pos=[table[i if config.pos_place == "every-layer" else 0]
                                                 for i in range(config.depth)])  # fmt: skip
    pooled = x[:, 0] if config.pool == "cls" else x.mean(dim=1)
    return torch_linear(pooled, params, "head")


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize(
    "stem, stem_width, pos_embed, pos_place",
    [(0, 0, "1d", "input"), (2, 0, "1d", "input"), (2, 10, "1d", "input"),  # stem widths 3, 6 by default; 5, 10 when set
     (0, 0, "2d", "input"), (0, 0, "none", "input"), (0, 0, "1d", "every-layer"), (0, 0, "2d", "every-layer-shared"),
     (0, 0, "relative", "input")],
)  # fmt: skip
def test_vit(pool, stem, stem_width, pos_embed, pos_place):
    rng = np.random.default_rng(11)
    model = ViT(image_size=8, patch_size=4 >> stem, num_classes=5, dim=12, depth=2, heads=3, mlp_dim=20, pool=pool,
                stem=stem, stem_width=stem_width, pos_embed=pos_embed, pos_place=pos_place)  # fmt: skip
    model.to(dtype=np.float64)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3  # LayerNorm weights not all ones, biases not zero
    images, labels = rng.standard_normal((3, 8, 8, 3)), rng.integers(0, 5, size=3)

    logits = model(images)
    loss, cache = ops.cross_entropy_forward(logits, labels, label_smoothing=0.1)
    dimages = model.backward(ops.cross_entropy_backward(cache))

    params = {name: to_t(a, grad=True) for name, a in model.state_dict().items()}
    timages = to_t(images, grad=True)
    tlogits = torch_vit(timages, params, model.config)
    tloss = F.cross_entropy(tlogits, to_ids(labels), label_smoothing=0.1)
    tloss.backward()
    assert_close(logits, tlogits, "logits")
    assert_close(loss, tloss, "loss")
    assert_close(dimages, timages.grad, "dimages")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad, f"grad of {name}")


def torch_resnet(images, params, config):
    """The BiT-style ResNet from its definition (pre-activation bottlenecks, GroupNorm, standardised
    convolutions), in torch's NCHW layout."""

    def std_conv(x, name, stride=1, padding=0):
        w = params[name].permute(3, 2, 0, 1)  # HWIO -> OIHW
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-10), stride=stride, padding=padding)

    def gn_relu(x, name):
        return F.relu(F.group_norm(x, config.groups, params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5))

    x = std_conv(images.permute(0, 3, 1, 2), "root.weight", padding=1)
    unit = 0
    for stage, count in enumerate(config.blocks):
        for i in range(count):
            u = f"units.{unit}"
            stride = 2 if stage > 0 and i == 0 else 1
            h = gn_relu(x, f"{u}.norm1")
            y = std_conv(h, f"{u}.conv1.weight")
            y = std_conv(gn_relu(y, f"{u}.norm2"), f"{u}.conv2.weight", stride, 1)
            y = std_conv(gn_relu(y, f"{u}.norm3"), f"{u}.conv3.weight")
            shortcut = f"{u}.shortcut.weight"
            x = y + (std_conv(h, shortcut, stride) if shortcut in params else x)
            unit += 1
    pooled = gn_relu(x, "norm").mean(dim=(2, 3))
    return torch_linear(pooled, params, "head")


def test_resnet():
    from minivit.models.resnet import ResNet

    rng = np.random.default_rng(19)
    model = ResNet(image_size=8, num_classes=5, width=4, blocks=(2, 1), groups=2).to(dtype=np.float64)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3  # GroupNorm weights not all ones, the head not zero
    images, labels = rng.standard_normal((3, 8, 8, 3)), rng.integers(0, 5, size=3)

    logits = model(images)
    loss, cache = ops.cross_entropy_forward(logits, labels)
    dimages = model.backward(ops.cross_entropy_backward(cache))

    params = {name: to_t(a, grad=True) for name, a in model.state_dict().items()}
    timages = to_t(images, grad=True)
    tlogits = torch_resnet(timages, params, model.config)
    F.cross_entropy(tlogits, to_ids(labels)).backward()
    assert_close(logits, tlogits, "logits")
    assert_close(dimages, timages.grad, "dimages")
    shortcuts = {name for name in params if "shortcut" in name}
    assert shortcuts == {"units.0.shortcut.weight", "units.2.shortcut.weight"}  # where the shape changes, not in unit 1
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad, f"grad of {name}")


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_masked_patch_vit(pool):
    """Masked patch prediction: the corruption (masked, replaced from another image, kept), every patch
    token's colour logits, the loss over the corrupted patches."""
    from minivit.models.masked_patches import KEPT, MASKED, REPLACED, UNTOUCHED, Corruption, MaskedPatchViT

    rng = np.random.default_rng(14)
    model = MaskedPatchViT(image_size=8, patch_size=4, num_classes=512, dim=12, depth=2, heads=3, mlp_dim=20,
                           pool=pool).to(dtype=np.float64)  # fmt: skip
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    kind = np.array([[REPLACED, MASKED, UNTOUCHED, KEPT], [MASKED, UNTOUCHED, REPLACED, MASKED]], dtype=np.int8)
    source = np.arange(8).reshape(2, 4)
    source[0, 0], source[1, 2] = 5, 0
    corruption = Corruption(kind, source)
    images, targets = rng.standard_normal((2, 8, 8, 3)), rng.integers(0, 512, 8)
    chosen = np.flatnonzero(kind.reshape(-1) != UNTOUCHED)

    logits = model(images, corruption)
    loss, cache = ops.cross_entropy_forward(logits.reshape(-1, 512)[chosen], targets[chosen])
    dlogits = np.zeros((8, 512))
    dlogits[chosen] = ops.cross_entropy_backward(cache)
    dimages = model.backward(dlogits.reshape(logits.shape))

    params = {name: to_t(a, grad=True) for name, a in model.state_dict().items()}
    timages = to_t(images, grad=True)
    x = torch_linear(torch_patchify(timages, 4), params, "patch_embed").reshape(8, 12)[torch.as_tensor(source.ravel())]
    x = torch.where(torch.as_tensor(kind.ravel() == MASKED)[:, None], params["mask_token"].reshape(1, 12), x)
    x = x.reshape(2, 4, 12)
    if pool == "cls":
        x = torch.cat([params["cls_token"].expand(2, 1, 12), x], dim=1)
    h = torch_blocks(x + params["pos_embed"][0], params, model.config)  # LN(z_L) of every token
    tlogits = torch_linear(h[:, -4:], params, "head")
    tloss = F.cross_entropy(tlogits.reshape(-1, 512)[torch.as_tensor(chosen)], to_ids(targets[chosen]))
    tloss.backward()
    assert_close(logits, tlogits, "logits")
    assert_close(loss, tloss, "loss")
    assert_close(dimages, timages.grad, "dimages")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad, f"grad of {name}")
    assert KEPT in kind  # every kind of corruption is in the batch


# -- the whole iGPT ----------------------------------------------------------------------------


def torch_igpt(ids, params, config, classify=False):
    """iGPT's forward in torch: [SOS; embeddings of ids shifted right] + W_pos, causal blocks, LN, head;
    with classify, also the class logits of the classifier head on the positions' mean."""
    b, t = ids.shape
    x = F.embedding(ids[:, :-1], params["tok_embed.weight"])
    x = torch.cat([params["sos"].expand(b, 1, config.dim), x], dim=1) + params["pos_embed"][:, :t]
    h = torch_blocks(x, params, config, causal=True)  # the final LN's output
    logits = torch_linear(h, params, "head")
    return (logits, torch_linear(h.mean(dim=1), params, "clf_head")) if classify else logits


@pytest.mark.parametrize("t, heads", [(16, 2), (7, 1), (1, 2)])
def test_igpt(t, heads):
    from minivit.models import IGPT

    rng = np.random.default_rng(12)
    model = IGPT(image_size=4, vocab_size=6, dim=8, depth=2, heads=heads, mlp_dim=12).to(dtype=np.float64)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    ids = rng.integers(0, 6, size=(3, t))

    logits = model(ids)  # (B, T, K)
    loss, cache = ops.cross_entropy_forward(logits.reshape(-1, 6), ids.reshape(-1))
    model.backward(ops.cross_entropy_backward(cache).reshape(logits.shape))

    params = {name: to_t(a, grad=True) for name, a in model.state_dict().items()}
    tlogits = torch_igpt(to_ids(ids), params, model.config)
    tloss = F.cross_entropy(tlogits.reshape(-1, 6), to_ids(ids).reshape(-1))
    tloss.backward()
    assert_close(logits, tlogits, "logits")
    assert_close(loss, tloss, "loss")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad, f"grad of {name}")


@pytest.mark.parametrize("gen_weight", [0.0, 0.5])
def test_igpt_classifier_joint_loss(gen_weight):
    """Fine-tuning's L_CLF + w L_GEN (Sec. 3.4) through the classifier head on the mean of LN(h_L)."""
    from minivit.models import IGPTClassifier

    rng = np.random.default_rng(13)
    model = IGPTClassifier(image_size=3, vocab_size=6, dim=8, depth=2, heads=2, mlp_dim=12, num_classes=4)
    model.to(dtype=np.float64)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    ids, labels = rng.integers(0, 6, size=(3, 9)), np.array([0, 3, 1])

    logits, class_logits = model(ids)
    clf, clf_cache = ops.cross_entropy_forward(class_logits, labels)
    gen, gen_cache = ops.cross_entropy_forward(logits.reshape(-1, 6), ids.reshape(-1))
    model.backward(gen_weight * ops.cross_entropy_backward(gen_cache).reshape(logits.shape),
                   ops.cross_entropy_backward(clf_cache))  # fmt: skip

    params = {name: to_t(a, grad=True) for name, a in model.state_dict().items()}
    tlogits, tclass = torch_igpt(to_ids(ids), params, model.config, classify=True)
    tloss = F.cross_entropy(tclass, to_ids(labels)) + gen_weight * F.cross_entropy(tlogits.reshape(-1, 6),
                                                                                   to_ids(ids).reshape(-1))  # fmt: skip
    tloss.backward()
    assert_close(class_logits, tclass, "class logits")
    assert_close(clf + gen_weight * gen, tloss, "joint loss")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad, f"grad of {name}")


# -- optimisers --------------------------------------------------------------------------------


def run_optimizers(make_ours, make_torch, steps=5):
    """Step minivit's and torch's optimiser side by side on a decayed weight and an undecayed bias,
    with the same random gradients (magnitudes from 1e-9 to 1), and compare the parameters after
    every step."""
    rng = np.random.default_rng(12)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    ours = [Parameter(start[0].copy(), decay=True), Parameter(start[1].copy(), decay=False)]
    theirs = [to_t(a, grad=True) for a in start]
    opt, topt = make_ours(ours), make_torch(theirs)
    for step in range(1, steps + 1):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-9, 0, p.shape)  # down to where ε matters
            p.grad[...] = g
            t.grad = to_t(g)
        opt.step()
        topt.step()
        for name, p, t in zip(("weight (decay)", "bias (no decay)"), ours, theirs):
            assert_close(p.data, t, f"step {step}, {name}")


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw(weight_decay):
    run_optimizers(
        lambda ps: AdamW(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay),
        lambda ts: torch.optim.AdamW(
            [{"params": ts[:1], "weight_decay": weight_decay}, {"params": ts[1:], "weight_decay": 0.0}],
            lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
        ),
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd(weight_decay):
    run_optimizers(
        lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=weight_decay),
        lambda ts: torch.optim.SGD(
            [{"params": ts[:1], "weight_decay": weight_decay}, {"params": ts[1:], "weight_decay": 0.0}],
            lr=0.1, momentum=0.9,
        ),
    )
