"""The Vision Transformer (Dosovitskiy et al., ICLR 2021), equations 1-4 of the paper.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos      (Eq. 1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                     (Eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l                           (Eq. 3)
    y    = LN(z_L^0)                                      (Eq. 4), then a linear head

With stem = n > 0 it is the paper's hybrid (Sec. 3.1): the patches x_p are cut from the feature map
of n 3×3 stride-2 convolutions (each followed by LayerNorm and GELU) instead of from the image.

The position embedding E_pos has the variants of the paper's Appendix D.4 (Table 8): `pos_embed`
"1d" (one learned vector per position, Eq. 1), "2d" (a learned vector of D/2 for each patch row and
one for each column, concatenated), "none", or "relative" (no E_pos: every block's attention adds
q_i · rel_{i-j} to its logits, one learned key per offset between positions in the sequence);
`pos_place`, for "1d" and "2d": "input" (added once, Eq. 1), "every-layer" (a separate E_pos added
to the input of every block) or "every-layer-shared" (one E_pos added to the input of every block).

    model = ViT.from_preset("tiny")           # or ViT(image_size=32, patch_size=4, ...)
    logits = model(images)                    # images (B, H, W, C) float -> (B, num_classes)
    model.backward(dlogits)                   # fills every parameter's .grad
    bigger = model.resize(48)                 # Sec. 3.2: the same weights at 48×48, E_pos interpolated
"""

from dataclasses import dataclass, replace

import numpy as np

from .. import backend, ops
from ..nn import GELU, Block, Conv2d, Dropout, LayerNorm, Linear, Module, PatchDropout, new_parameter, trunc_normal
from .inputs import check_images
from .presets import Configured, check_heads, from_presets


POS_KINDS = ("1d", "2d", "none", "relative")
POS_PLACES = ("input", "every-layer", "every-layer-shared")


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    num_classes: int = 10
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_dim: int = 384
    pool: str = "cls"  # "cls": class token (Eq. 4); "mean": average of the patch tokens (GAP)
    dropout: float = 0.0
    in_channels: int = 3
    patch_dropout: float = 0.0  # share of patch tokens each image drops while training (PatchDropout)
    stem: int = 0  # 3×3 stride-2 convolutions before the patches (the hybrid, Sec. 3.1)
    stem_width: int = 0  # channels of the stem's last convolution, each earlier one has half (0: D/2)
    pos_embed: str = "1d"  # "1d", "2d", "none" or "relative" (Appendix D.4)
    pos_place: str = "input"  # "input" (Eq. 1), "every-layer" or "every-layer-shared"

    def __post_init__(self):  # every way to a ViT (keywords, a preset, a checkpoint) checks its shape here
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.pos_embed not in POS_KINDS or self.pos_place not in POS_PLACES:
            raise ValueError(f"pos_embed must be one of {POS_KINDS} and pos_place one of {POS_PLACES}, got "
                             f"{self.pos_embed!r} and {self.pos_place!r}")  # fmt: skip
        if self.pos_embed in ("none", "relative") and self.pos_place != "input":
            raise ValueError(f"pos_place {self.pos_place!r} places an absolute position embedding; pos_embed "
                             f"{self.pos_embed!r} has none to place")  # fmt: skip
        if self.pos_embed == "2d" and self.dim % 2:
            raise ValueError(f"pos_embed '2d' splits dim into a row half and a column half; dim {self.dim} is odd")
        if self.patch_dropout and (self.pos_place != "input" or self.pos_embed == "relative"):
            raise ValueError(f"patch_dropout drops tokens after the input, so it needs pos_place 'input' and an "
                             f"absolute pos_embed, got {self.pos_embed!r} at {self.pos_place!r}")  # fmt: skip
        if self.stem_width < 0 or (self.stem_width and not self.stem):
            raise ValueError(f"stem_width must be 0, or >= 1 with a stem, got stem_width {self.stem_width}, "
                             f"stem {self.stem}")  # fmt: skip
        if self.stem < 0 or (self.stem and self.last_stem_width >> (self.stem - 1) < 1):
            raise ValueError(f"stem must be >= 0, with a first width (last width / 2^(stem-1)) of at least 1; got "
                             f"stem {self.stem}, last width {self.last_stem_width}")  # fmt: skip
        if self.image_size % (self.patch_size << self.stem):
            after = f" after a stem of {self.stem} stride-2 convolutions" if self.stem else ""
            raise ValueError(f"image {self.image_size}×{self.image_size} is not divisible by patch "
                             f"{self.patch_size}{after}")  # fmt: skip
        check_heads(self.dim, self.heads)

    @property
    def last_stem_width(self):
        return self.stem_width or self.dim // 2


PRESETS = {
    # ViT-Tiny's width and heads (192, 3) at CIFAR scale: 64 patches of 4×4, 6 blocks, 1.8 M parameters.
    "tiny": ViTConfig(),
    # A quicker model for 2 CPU cores: half the width, 4 blocks, 0.55 M parameters.
    "mini": ViTConfig(dim=128, depth=4, heads=4, mlp_dim=256),
}


def preset(name, **overrides):
    """A named ViTConfig, with any field overridden: preset("tiny", num_classes=100)."""
    return from_presets(PRESETS, name, "preset", **overrides)


class ViT(Configured, Module):
    """Vision Transformer classifier.

    Parameters (names as in state_dict()):
      stem.i       Conv2d, LayerNorm, GELU, `stem` times (hybrid only), widths ..., S/2, S: S = stem_width or D/2
      patch_embed  Linear(P²C, D)      E, C the channels of the image or of the stem's feature map
      cls_token    (1, 1, D)           x_class (pool="cls" only)
      pos_embed    (L_p, T, D)         E_pos ("1d"), T = N + 1 with a class token, N without; L_p = depth
                                       for pos_place "every-layer" (one per block), else 1
      pos_row      (L_p, G, D/2)       "2d": one vector per patch row of the G×G grid ...
      pos_col      (L_p, G, D/2)       ... and one per column (the class token gets none: it is learned)
      blocks.i     Block               Eq. 2-3
      norm         LayerNorm(D)        the LN of Eq. 4
      head         Linear(D, K)
    """

    config_class = ViTConfig
    preset = staticmethod(preset)

    def __init__(self, *fields, **config):
        """ViT(the fields of ViTConfig, by name or in its order), e.g. ViT(dim=64, heads=2): those not given keep its
        defaults, and ViTConfig checks that they fit together."""
        c = self.config = self.config_class(*fields, **config)
        self.feature_size = c.image_size >> c.stem  # the side of what the patches are cut from
        num_tokens = (self.feature_size // c.patch_size) ** 2 + (c.pool == "cls")

        self.stem, channels = [], c.in_channels
        for i in range(c.stem):  # halving the side, doubling the width up to the last width
            width = c.last_stem_width >> (c.stem - 1 - i)
            self.stem += [Conv2d(channels, width, 3, stride=2, padding=1), LayerNorm(width), GELU()]
            channels = width
        self.patch_embed = Linear(c.patch_size * c.patch_size * channels, c.dim)
        if c.pool == "cls":
            self.cls_token = new_parameter(trunc_normal((1, 1, c.dim)), decay=False)
        tables = c.depth if c.pos_place == "every-layer" else 1
        grid = self.feature_size // c.patch_size
        if c.pos_embed == "1d":
            self.pos_embed = new_parameter(trunc_normal((tables, num_tokens, c.dim)), decay=False)
        elif c.pos_embed == "2d":
            self.pos_row = new_parameter(trunc_normal((tables, grid, c.dim // 2)), decay=False)
            self.pos_col = new_parameter(trunc_normal((tables, grid, c.dim // 2)), decay=False)
        self.dropout = Dropout(c.dropout)
        self.patch_dropout = PatchDropout(c.patch_dropout, num_prefix=int(c.pool == "cls"))
        relative = num_tokens if c.pos_embed == "relative" else 0
        self.blocks = [Block(c.dim, c.heads, c.mlp_dim, c.dropout, relative=relative) for _ in range(c.depth)]
        self.norm = LayerNorm(c.dim)
        self.head = Linear(c.dim, c.num_classes)

    def forward(self, images):
        """images: (B, H, W, C) floating point -> logits (B, num_classes)"""
        return self.head(self.features(images))  # (B, K)

    def features(self, images):
        """images: (B, H, W, C) floating point -> y (B, D), Eq. 4's pre-logits: what the head reads, and what
        few-shot linear evaluation reads of a frozen model (minivit.fewshot; call it in eval mode)."""
        ### BEGIN SOLUTION
        x = self._encode(self._embed_patches(images))  # (B, T, D): z_L
        if self.config.pool == "cls":
            self._tokens_shape = x.shape
            return self.norm(x[:, 0])  # y = LN(z_L^0), Eq. 4: only the class token is normalised
        pooled, self._pool_cache = ops.mean_pool_forward(self.norm(x))  # (B, D)
        return pooled
        ### END SOLUTION

    def backward(self, dlogits):
        """dlogits: (B, K) -> dimages (B, H, W, C); fills every parameter's grad."""
        xp = backend.array_module(dlogits)
        ### BEGIN SOLUTION
        dpooled = self.head.backward(dlogits)  # (B, D)
        if self.config.pool == "cls":
            dx = xp.zeros(self._tokens_shape, dtype=dpooled.dtype)
            dx[:, 0] = self.norm.backward(dpooled)
        else:
            dx = self.norm.backward(ops.mean_pool_backward(dpooled, self._pool_cache))
        return self._embed_patches_backward(self._encode_backward(dx))
        ### END SOLUTION

    def _embed_patches(self, images):
        """images (B, H, W, C) -> x_p E (B, N, D): the stem's convolutions (hybrid), patches, embedding."""
        check_images(self, images)
        x = images
        for layer in self.stem:
            x = layer(x)  # each convolution halves H and W: (B, H/2^n, W/2^n, S) after all n
        x = ops.patchify(x, self.config.patch_size)  # (B, N, P²C)
        return self.patch_embed(x)  # (B, N, D): x_p E

    def _embed_patches_backward(self, dx):
        """dx: the gradient of x_p E (B, N, D) -> dimages (B, H, W, C)."""
        dpatches = self.patch_embed.backward(dx)  # (B, N, P²C)
        dx = ops.patchify_backward(dpatches, self.config.patch_size, self.feature_size)
        for layer in reversed(self.stem):
            dx = layer.backward(dx)
        return dx  # (B, H, W, C)

    def _encode(self, x):
        """x_p E (B, N, D) -> z_L (B, T', D): the class token, E_pos, dropout, PatchDropout, the blocks."""
        xp = backend.array_module(x)
        if self.config.pool == "cls":
            cls = xp.broadcast_to(self.cls_token.data, (x.shape[0], 1, x.shape[2]))
            x = xp.concatenate([cls, x], axis=1)  # (B, T, D)
        pos = self.position_embeddings()  # (L_p, T, D), or None
        if self.config.pos_place == "input" and pos is not None:
            x = x + pos[0]  # z_0, Eq. 1
        x = self.dropout(x)
        x = self.patch_dropout(x)  # (B, T', D): while training, T' ≤ T tokens with patch_dropout > 0
        for i, block in enumerate(self.blocks):
            if self.config.pos_place != "input":
                x = x + pos[i if self.config.pos_place == "every-layer" else 0]
            x = block(x)  # Eq. 2-3
        return x

    def _encode_backward(self, dx):
        """dx: the gradient of z_L (B, T', D) -> the gradient of x_p E (B, N, D)."""
        xp = backend.array_module(dx)
        place = self.config.pos_place
        dpos = []  # an E_pos added at a block's input gets the gradient there, summed over the batch
        for block in reversed(self.blocks):
            dx = block.backward(dx)
            if place != "input":
                dpos.insert(0, dx.sum(axis=0))  # (T, D), in block order
        dx = self.dropout.backward(self.patch_dropout.backward(dx))  # (B, T, D)
        if self.config.pos_embed in ("1d", "2d"):
            if place == "input":
                self._position_backward(dx.sum(axis=0, keepdims=True))  # (1, T, D)
            elif place == "every-layer":
                self._position_backward(xp.stack(dpos))  # (L, T, D): block i's own table
            else:  # every-layer-shared: one table, used by every block
                self._position_backward(sum(dpos[1:], dpos[0])[None])
        if self.config.pool == "cls":
            self.cls_token.grad += dx[:, :1].sum(axis=0, keepdims=True)
            dx = dx[:, 1:]
        return dx  # (B, N, D)

    def position_embeddings(self):
        """E_pos as a table (L_p, T, D): one row per token (the class token first), one table per block
        for pos_place "every-layer", else one; None for pos_embed "none". For "2d" the row of patch
        (r, c) is [pos_row[r]; pos_col[c]] and the class token's row is 0. None for "none" and for
        "relative", whose positions live in each block's attention (blocks.i.attn.rel)."""
        kind = self.config.pos_embed
        if kind == "1d":
            return self.pos_embed.data
        if kind in ("none", "relative"):
            return None
        xp = backend.array_module(self.pos_row.data)
        tables, grid, half = self.pos_row.shape
        rows = xp.broadcast_to(self.pos_row.data[:, :, None], (tables, grid, grid, half))  # [l, r, c] = row r
        cols = xp.broadcast_to(self.pos_col.data[:, None, :], (tables, grid, grid, half))  # [l, r, c] = column c
        table = xp.concatenate([rows, cols], axis=-1).reshape(tables, grid * grid, 2 * half)  # raster order
        if self.config.pool == "cls":
            table = xp.concatenate([xp.zeros((tables, 1, 2 * half), dtype=table.dtype), table], axis=1)
        return table

    def _position_backward(self, dtable):
        """Add the gradient of the E_pos table (L_p, T, D) into the position parameters' grads.
        "2d": row r's vector appears in every patch (r, c) of its row, so it gets the sum of their
        first halves; column c's the sum of the second halves down its column."""
        if self.config.pos_embed == "1d":
            self.pos_embed.grad += dtable
            return
        tables, grid, half = self.pos_row.shape
        d = dtable[:, -grid * grid :].reshape(tables, grid, grid, 2 * half)  # the patches, without the class token
        self.pos_row.grad += d[..., :half].sum(axis=2)
        self.pos_col.grad += d[..., half:].sum(axis=1)

    def resize(self, image_size):
        """This model at another input size, for fine-tuning at a higher resolution (Sec. 3.2): the patch
        size stays, so the sequence grows (or shrinks), and each learned position embedding is
        interpolated by its place in the image, bilinearly and corners to corners (as the paper's code,
        scipy.ndimage.zoom with order 1); the class token's row stays as it is. Every other parameter is
        copied. returns a new ViT on this model's backend and dtype; this one is unchanged.
        """
        if self.config.pos_embed == "relative":
            raise ValueError("relative attention's keys are offsets in the 1-D token sequence, which has no image "
                             "layout to interpolate; resize works for pos_embed '1d', '2d' and 'none'")  # fmt: skip
        resized = type(self).from_config(replace(self.config, image_size=image_size))  # checks the new size fits
        grid, new_grid = self.feature_size // self.config.patch_size, resized.feature_size // self.config.patch_size
        state = self.state_dict()
        if self.config.pos_embed == "1d":
            table = state["pos_embed"]  # (L_p, T, D), the class token first if there is one
            cls, patches = table[:, : -grid * grid], table[:, -grid * grid :]
            patches = patches.reshape(len(table), grid, grid, -1)
            patches = _interpolate(_interpolate(patches, new_grid, axis=1), new_grid, axis=2)
            state["pos_embed"] = np.concatenate([cls, patches.reshape(len(table), new_grid * new_grid, -1)], axis=1)
        elif self.config.pos_embed == "2d":  # one vector per row and one per column: interpolate each list
            for name in ("pos_row", "pos_col"):
                state[name] = _interpolate(state[name], new_grid, axis=1)
        return resized.to(self.backend, self.dtype).load_state_dict(state)

    def attention_maps(self):
        """The attention weights of the last forward, one (B, H, T, T) array per block."""
        return [block.attn.attn for block in self.blocks]


def _interpolate(x, size, axis):
    """Linear interpolation of x's G points along `axis` to `size` points, the first and last kept:
    output point i samples the input at u = i (G - 1) / (size - 1) (NumPy, float)."""
    g = x.shape[axis]
    u = np.arange(size) * ((g - 1) / (size - 1)) if size > 1 else np.zeros(1)
    lo = np.minimum(np.floor(u).astype(np.int64), g - 1)
    hi = np.minimum(lo + 1, g - 1)
    w = (u - lo).reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
