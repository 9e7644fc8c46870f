"""The Vision Transformer (Dosovitskiy et al., ICLR 2021), equations 1-4 of the paper.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos      (Eq. 1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                     (Eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l                           (Eq. 3)
    y    = LN(z_L^0)                                      (Eq. 4), then a linear head

With stem = n > 0 it is the paper's hybrid (Sec. 3.1): the patches x_p are cut from the feature map
of n 3×3 stride-2 convolutions (each followed by LayerNorm and GELU) instead of from the image.

    model = ViT.from_preset("tiny")           # or ViT(image_size=32, patch_size=4, ...)
    logits = model(images)                    # images (B, H, W, C) float -> (B, num_classes)
    model.backward(dlogits)                   # fills every parameter's .grad
"""

from dataclasses import asdict, dataclass

from .. import backend, ops
from ..nn import GELU, Block, Conv2d, Dropout, LayerNorm, Linear, Module, PatchDropout, new_parameter, trunc_normal
from .presets import from_presets


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


PRESETS = {
    # ViT-Tiny's width and heads (192, 3) at CIFAR scale: 64 patches of 4×4, 6 blocks, 1.8 M parameters.
    "tiny": ViTConfig(),
    # A quicker model for 2 CPU cores: half the width, 4 blocks, 0.55 M parameters.
    "mini": ViTConfig(dim=128, depth=4, heads=4, mlp_dim=256),
}


def preset(name, **overrides):
    """A named ViTConfig, with any field overridden: preset("tiny", num_classes=100)."""
    return from_presets(PRESETS, name, "preset", **overrides)


class ViT(Module):
    """Vision Transformer classifier.

    Parameters (names as in state_dict()):
      stem.i       Conv2d, LayerNorm, GELU, `stem` times (hybrid only), widths ..., S/2, S: S = stem_width or D/2
      patch_embed  Linear(P²C, D)      E, C the channels of the image or of the stem's feature map
      cls_token    (1, 1, D)           x_class (pool="cls" only)
      pos_embed    (1, T, D)           E_pos, T = N + 1 with a class token, N without
      blocks.i     Block               Eq. 2-3
      norm         LayerNorm(D)        the LN of Eq. 4
      head         Linear(D, K)
    """

    config_class = ViTConfig

    def __init__(self, image_size=32, patch_size=4, num_classes=10, dim=192, depth=6, heads=3,
                 mlp_dim=384, pool="cls", dropout=0.0, in_channels=3, patch_dropout=0.0, stem=0, stem_width=0):
        self.config = ViTConfig(image_size, patch_size, num_classes, dim, depth, heads, mlp_dim,
                                pool, dropout, in_channels, patch_dropout, stem, stem_width)
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if stem_width < 0 or (stem_width and not stem):
            raise ValueError(f"stem_width must be 0, or >= 1 with a stem, got stem_width {stem_width}, stem {stem}")
        last_width = stem_width or dim // 2
        if stem < 0 or (stem and last_width >> (stem - 1) < 1):
            raise ValueError(f"stem must be >= 0, with a first width (last width / 2^(stem-1)) of at least 1; got "
                             f"stem {stem}, last width {last_width}")  # fmt: skip
        if image_size % (patch_size << stem):
            after = f" after a stem of {stem} stride-2 convolutions" if stem else ""
            raise ValueError(f"image {image_size}×{image_size} is not divisible by patch {patch_size}{after}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.feature_size = image_size >> stem  # the side of what the patches are cut from
        num_patches = (self.feature_size // patch_size) ** 2
        num_tokens = num_patches + (pool == "cls")

        self.stem, channels = [], in_channels
        for width in (last_width >> (stem - 1 - i) for i in range(stem)):  # halving the side, doubling the width
            self.stem += [Conv2d(channels, width, 3, stride=2, padding=1), LayerNorm(width), GELU()]
            channels = width
        self.patch_embed = Linear(patch_size * patch_size * channels, dim)
        if pool == "cls":
            self.cls_token = new_parameter(trunc_normal((1, 1, dim)), decay=False)
        self.pos_embed = new_parameter(trunc_normal((1, num_tokens, dim)), decay=False)
        self.dropout = Dropout(dropout)
        self.patch_dropout = PatchDropout(patch_dropout, num_prefix=int(pool == "cls"))
        self.blocks = [Block(dim, heads, mlp_dim, dropout) for _ in range(depth)]
        self.norm = LayerNorm(dim)
        self.head = Linear(dim, num_classes)

    @classmethod
    def from_config(cls, config):
        return cls(**asdict(config))

    @classmethod
    def from_preset(cls, name, **overrides):
        return cls.from_config(preset(name, **overrides))

    def _check_images(self, images):
        c = self.config
        xp = backend.array_module(images)
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, H, W, C), got an array of shape {images.shape}")
        _, h, w, ch = images.shape
        if ch != c.in_channels:
            raise ValueError(f"expected {c.in_channels} channels (NHWC images), got {ch} in shape {images.shape}")
        if (h, w) != (c.image_size, c.image_size):
            raise ValueError(f"expected {c.image_size}×{c.image_size} images, got {h}×{w}")
        if images.dtype.kind != "f":
            raise ValueError(
                f"expected floating-point images, got {images.dtype}; convert with images.astype(np.float32) / 255"
            )
        if images.dtype != self.dtype:
            raise ValueError(f"expected {self.dtype} images (the model's dtype), got {images.dtype}")
        if not bool(xp.isfinite(images).all()):
            raise ValueError("images contain NaN or infinite values")

    def forward(self, images):
        """images: (B, H, W, C) floating point -> logits (B, num_classes)"""
        self._check_images(images)
        xp = backend.array_module(images)
        b = images.shape[0]
        x = images
        for layer in self.stem:
            x = layer(x)  # each convolution halves H and W: (B, H/2^n, W/2^n, S) after all n
        x = ops.patchify(x, self.config.patch_size)  # (B, N, P²C)
        x = self.patch_embed(x)  # (B, N, D): x_p E
        if self.config.pool == "cls":
            cls = xp.broadcast_to(self.cls_token.data, (b, 1, x.shape[2]))
            x = xp.concatenate([cls, x], axis=1)  # (B, T, D)
        x = x + self.pos_embed.data  # z_0, Eq. 1
        x = self.dropout(x)
        x = self.patch_dropout(x)  # (B, T', D): while training, T' ≤ T tokens with patch_dropout > 0
        for block in self.blocks:
            x = block(x)  # Eq. 2-3
        if self.config.pool == "cls":
            self._tokens_shape = x.shape
            pooled = self.norm(x[:, 0])  # y = LN(z_L^0), Eq. 4: only the class token is normalised
        else:
            pooled, self._pool_cache = ops.mean_pool_forward(self.norm(x))  # (B, D)
        return self.head(pooled)  # (B, K)

    def backward(self, dlogits):
        """dlogits: (B, K) -> dimages (B, H, W, C); fills every parameter's grad."""
        xp = backend.array_module(dlogits)
        dpooled = self.head.backward(dlogits)  # (B, D)
        if self.config.pool == "cls":
            dx = xp.zeros(self._tokens_shape, dtype=dpooled.dtype)
            dx[:, 0] = self.norm.backward(dpooled)
        else:
            dx = self.norm.backward(ops.mean_pool_backward(dpooled, self._pool_cache))
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        dx = self.dropout.backward(self.patch_dropout.backward(dx))  # (B, T, D)
        self.pos_embed.grad += dx.sum(axis=0, keepdims=True)
        if self.config.pool == "cls":
            self.cls_token.grad += dx[:, :1].sum(axis=0, keepdims=True)
            dx = dx[:, 1:]
        dpatches = self.patch_embed.backward(dx)  # (B, N, P²C)
        dx = ops.patchify_backward(dpatches, self.config.patch_size, self.feature_size)
        for layer in reversed(self.stem):
            dx = layer.backward(dx)
        return dx  # (B, H, W, C)

    def attention_maps(self):
        """The attention weights of the last forward, one (B, H, T, T) array per block."""
        return [block.attn.attn for block in self.blocks]
