"""What a trained model learned, as numbers: the measurements behind Figure 7 of the ViT paper
(embedding filters, position-embedding similarity, mean attention distance) and attention rollout.
viz.py draws them; NumPy in, NumPy out (arrays on either backend are brought to NumPy here)."""

import numpy as np

from .backend import to_numpy


def embedding_filters(weight, patch_size, channels=3, count=28):
    """The top principal components of the patch-embedding filters E (P²C, D), as (count, P, P, C).

    Each of the D columns of E is a filter over a P×P×C patch; the principal directions of those D
    filters are the patterns the embedding is most sensitive to (Figure 7, left).
    """
    filters = to_numpy(weight).T  # (D, P²C)
    filters = filters - filters.mean(axis=0)
    _, _, vt = np.linalg.svd(filters, full_matrices=False)  # rows of vt: principal directions
    return vt[:count].reshape(-1, patch_size, patch_size, channels)


def position_similarity(pos_embed, grid):
    """Cosine similarity between the position embeddings of patches: (grid, grid, grid, grid), where
    [r, c] is the map of patch (r, c)'s similarity to every patch. A class token's row is dropped."""
    pos = to_numpy(pos_embed).reshape(-1, to_numpy(pos_embed).shape[-1])[-grid * grid :]  # (N, D)
    unit = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    return (unit @ unit.T).reshape(grid, grid, grid, grid)


def mean_attention_distance(attn, grid, patch_size):
    """Mean attention distance per head, in pixels (Figure 7, right).

    attn: (B, H, T, T) attention weights of one block; T = N, or N + 1 with a class token first.
    For each patch query, the distance to every patch key weighted by the attention it pays to it
    (renormalised over the patch keys), averaged over queries and images. returns (H,)
    """
    attn = to_numpy(attn)
    n = grid * grid
    a = attn[:, :, -n:, -n:]  # patch queries to patch keys, (B, H, N, N)
    a = a / a.sum(axis=-1, keepdims=True)
    rows, cols = np.divmod(np.arange(n), grid)
    distance = np.hypot(rows[:, None] - rows, cols[:, None] - cols) * patch_size  # (N, N) pixels
    return (a * distance).sum(axis=-1).mean(axis=(0, 2))


def attention_rollout(attention_maps, has_cls=True):
    """Attention rollout (Abnar & Zuidema 2020): how much each patch feeds the output.

    Per block, average the heads and add the residual path: Â = (A + I) / 2, rows renormalised;
    multiply through the blocks. The output reads the class token's row (or, with mean pooling,
    the average row) over the patch tokens. attention_maps: list of (B, H, T, T). returns (B, N)
    """
    maps = [to_numpy(a).mean(axis=1) for a in attention_maps]  # (B, T, T) each
    t = maps[0].shape[-1]
    rollout = np.eye(t)
    for a in maps:
        a = 0.5 * a + 0.5 * np.eye(t)
        a /= a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout  # (B, T, T)
    if has_cls:
        return rollout[:, 0, 1:]
    return rollout.mean(axis=1)
