"""Masked patch prediction (Dosovitskiy et al., Sec. 4.6 and Appendix B.1.2): the ViT pretrained like
BERT, without labels.

Half of each image's patch embeddings x_p E are corrupted: of those, 80 % are replaced by a learned
[mask] embedding, 10 % by the embedding of a random other patch (of any image in the batch) and 10 %
are left as they are. From each corrupted patch's output token the model predicts the patch's 3-bit
mean colour: each channel's mean over the patch, quantised to 8 levels, so 8³ = 512 classes, with a
cross-entropy over the corrupted patches only.

    model = MaskedPatchViT.from_preset("mini")             # num_classes = 512 colours
    corruption = draw_corruption(rng, batch=128, num_patches=64)
    logits = model(images, corruption)                     # (B, N, 512), every patch's colour logits
    model.backward(dlogits)                                # (B, N, 512), 0 where a patch is not corrupted
    targets = mean_colours(pixels, patch_size=4)           # (B, N) ids in [0, 512)
"""

from typing import NamedTuple

import numpy as np

from .. import backend, ops
from ..nn import new_parameter, trunc_normal
from .vit import ViT, preset

COLOUR_LEVELS = 8  # per channel: 3 bits, 8³ = 512 colour classes
UNTOUCHED, MASKED, REPLACED, KEPT = 0, 1, 2, 3  # Corruption.kind of a patch


class Corruption(NamedTuple):
    """Which patches are corrupted, and how (NumPy or the model's backend).

    kind: (B, N) int8, UNTOUCHED / MASKED ([mask] embedding) / REPLACED (another patch's embedding) /
          KEPT (corrupted, but its own embedding: the model must predict it anyway)
    source: (B, N) int64, the flat index b'·N + n' of the patch whose embedding goes in this place
            (its own index unless REPLACED)
    """

    kind: object
    source: object


def draw_corruption(rng, batch, num_patches, ratio=0.5, masked=0.8, replaced=0.1):
    """A Corruption for a batch: round(ratio·N) patches of each image, each MASKED with probability
    `masked`, REPLACED by a random other patch of the batch with probability `replaced`, else KEPT.
    rng: a NumPy Generator. returns NumPy arrays."""
    if not 0 < ratio <= 1 or masked < 0 or replaced < 0 or masked + replaced > 1:
        raise ValueError(f"need 0 < ratio <= 1 and masked, replaced >= 0 with masked + replaced <= 1, got {ratio}, "
                         f"{masked}, {replaced}")  # fmt: skip
    count = max(1, round(ratio * num_patches))
    chosen = np.argsort(rng.random((batch, num_patches)), axis=1)[:, :count]  # (B, count), without replacement
    u = rng.random((batch, count))
    kind = np.zeros((batch, num_patches), dtype=np.int8)
    np.put_along_axis(kind, chosen, np.where(u < masked, MASKED, np.where(u < masked + replaced, REPLACED, KEPT)),
                      axis=1)  # fmt: skip
    own = np.arange(batch * num_patches).reshape(batch, num_patches)
    other = rng.integers(0, max(1, batch * num_patches - 1), size=(batch, num_patches))
    other = other + (other >= own)  # any patch but itself
    source = np.where(kind == REPLACED, other, own) if batch * num_patches > 1 else own
    return Corruption(kind, source)


def mean_colours(pixels, patch_size):
    """Each patch's 3-bit mean colour: pixels (B, H, W, 3) in [0, 1] -> class ids (B, N) in [0, 512),
    id = 64 r + 8 g + b with r, g, b the channel means quantised to 8 levels."""
    xp = backend.array_module(pixels)
    means = ops.patchify(pixels, patch_size).reshape(*pixels.shape[:1], -1, patch_size * patch_size, 3).mean(axis=2)
    levels = xp.clip(xp.floor(means * COLOUR_LEVELS), 0, COLOUR_LEVELS - 1).astype(np.int64)  # (B, N, 3)
    return (levels[..., 0] * COLOUR_LEVELS + levels[..., 1]) * COLOUR_LEVELS + levels[..., 2]


class MaskedPatchViT(ViT):
    """The ViT with masked patch prediction's two additions (config.num_classes = 512 colours):

      mask_token  (1, 1, D)   the learned [mask] embedding
      head        Linear(D, 512) applied to every patch token's LN output (not to a pooled one)

    Every other parameter has the ViT's name, so a classifier starts from these weights with
    `TrainConfig.init` (its head, of other classes, is not taken: it starts at zero).
    """

    def __init__(self, *fields, **config):
        super().__init__(*fields, **config)
        if self.config.patch_dropout:
            raise ValueError("masked patch prediction needs every patch's output token: set patch_dropout 0")
        self.mask_token = new_parameter(trunc_normal((1, 1, self.config.dim)), decay=False)

    @staticmethod
    def preset(name, **overrides):
        return masked_patch_preset(name, **overrides)

    def forward(self, images, corruption):
        """images (B, H, W, C), corruption: a Corruption on the model's backend -> colour logits (B, N, 512)"""
        x = self._embed_patches(images)  # (B, N, D): x_p E
        b, n, d = x.shape
        if corruption.kind.shape != (b, n):
            raise ValueError(f"the corruption is for {corruption.kind.shape} patches, the images have {(b, n)}")
        ### BEGIN SOLUTION
        x, self._source_cache = ops.embedding_forward(corruption.source.reshape(-1), x.reshape(b * n, d))
        self._masked = corruption.kind.reshape(-1) == MASKED  # (B·N,)
        x[self._masked] = self.mask_token.data[0, 0]  # the [mask] embedding in place
        z = self._encode(x.reshape(b, n, d))  # (B, T, D)
        self._tokens_shape = z.shape
        return self.head(self.norm(z[:, z.shape[1] - n :]))  # (B, N, 512): the patch tokens, not a class token
        ### END SOLUTION

    def backward(self, dlogits):
        """dlogits: (B, N, 512) -> dimages (B, H, W, C); fills every parameter's grad."""
        xp = backend.array_module(dlogits)
        b, n, _ = dlogits.shape
        ### BEGIN SOLUTION
        dz = xp.zeros(self._tokens_shape, dtype=dlogits.dtype)
        dz[:, dz.shape[1] - n :] = self.norm.backward(self.head.backward(dlogits))
        dx = self._encode_backward(dz).reshape(b * n, -1)  # (B·N, D), after the corruption
        self.mask_token.grad += dx[self._masked].sum(axis=0)
        dx[self._masked] = 0  # a masked place's own embedding was not used
        dx = ops.embedding_backward(dx, self._source_cache)  # a replacing patch gets the gradient of its new place too
        return self._embed_patches_backward(dx.reshape(b, n, -1))
        ### END SOLUTION


def masked_patch_preset(name, **overrides):
    """A ViT preset with 512 colour classes, for masked patch prediction."""
    return preset(name, **{"num_classes": COLOUR_LEVELS**3, **overrides})
