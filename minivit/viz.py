"""Plots for runs and notebooks (the measurements they draw, such as Figure 7's, are in analysis.py).

Every plot function returns a matplotlib Figure (no global pyplot state), so it works the same as
the last line of a notebook cell and in a headless training run (`fig.savefig(...)`). Arrays may
live on either backend; they are brought to NumPy here.
"""

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .analysis import embedding_filters, mean_attention_distance, position_similarity
from .backend import to_numpy
from .tasks import best_epoch


def _grid(count, ncols, size=1.6, **kw):
    """A Figure with `count` image axes in rows of `ncols`, axis frames off."""
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + 0.4), layout="constrained", **kw)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    return fig, axes[:count]


def _unit(x):
    """Rescale to [0, 1] for display."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


# -- learning -------------------------------------------------------------------------------------


def plot_curves(history, baselines=None):
    """Learning curves from a run's metrics (a list of per-epoch dicts, as in metrics.jsonl): loss, and
    accuracy where the task has one, against epoch, train and test. baselines: {name: loss} drawn as
    dashed lines on the loss panel (iGPT's unigram, bigram and neighbour models)."""
    epochs = [m["epoch"] for m in history]
    keys = [key for key in ("loss", "accuracy") if not history or f"test_{key}" in history[0]]
    fig = Figure(figsize=(5 * len(keys), 4), layout="constrained")
    # the train loss is of augmented images against label-smoothed (or mixed) targets, so it sits above
    # a test loss of the same quality
    classify = "accuracy" in keys
    train_label = {"loss": "train (augmented, smoothed targets)" if classify else "train",
                   "accuracy": "train (augmented)"}  # fmt: skip
    for ax, key in zip(np.atleast_1d(fig.subplots(1, len(keys))), keys, strict=True):
        ax.plot(epochs, [m[f"train_{key}"] for m in history], "o-", label=train_label[key])
        if f"val_{key}" in history[0]:
            ax.plot(epochs, [m[f"val_{key}"] for m in history], "^-", label="validation (held-out training images)")
        ax.plot(epochs, [m[f"test_{key}"] for m in history], "s-", label="test")
        if key == "loss":
            for (name, value), color in zip((baselines or {}).items(), ("tab:grey", "tab:purple", "tab:green")):
                ax.axhline(value, color=color, ls="--", lw=1, label=f"{name} baseline (test)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key if classify else "nats per token")
        ax.set_title(key.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    if history:
        n, last, best = len(history), history[-1], best_epoch(history)
        metric, fmt = ("accuracy", ".1%") if classify else ("loss", ".4f")
        title = f"{n} epoch{'s' * (n != 1)}, test {metric} {last[f'test_{metric}']:{fmt}}"
        if best is not None:
            title += f"; chosen on validation: epoch {best['epoch']}, test {best[f'test_{metric}']:{fmt}}"
        fig.suptitle(title)
    return fig


def show_images(images, titles=None, ncols=8, size=1.6, suptitle=None):
    """A grid of images (B, H, W, C), uint8 or float in [0, 1] (other floats are rescaled per image)."""
    images = to_numpy(images)
    fig, axes = _grid(len(images), ncols, size)
    for i, (ax, im) in enumerate(zip(axes, images, strict=True)):
        if im.dtype != np.uint8 and (im.min() < 0 or im.max() > 1):
            im = _unit(im)
        ax.imshow(im, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_confusion(labels, predictions, classes):
    """Confusion matrix: row = true class, column = predicted, each row as a share of that class."""
    k = len(classes)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title(f"Confusion matrix (accuracy {np.trace(counts) / counts.sum():.1%})")
    return fig


# -- patches (Sec. 3.1) ---------------------------------------------------------------------------


def _image_with_grid(ax, image, patch_size, lw=1.0):
    """Draw an image (H, W, C) on `ax` with white lines between its P×P patches, no ticks."""
    h, w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    for edge in range(0, h + 1, patch_size):
        ax.axhline(edge - 0.5, color="white", lw=lw)
    for edge in range(0, w + 1, patch_size):
        ax.axvline(edge - 0.5, color="white", lw=lw)
    ax.set_xticks([])
    ax.set_yticks([])


def show_patch_grid(image, patch_size, numbers=True):
    """One image (H, W, C) with the patch grid drawn and each patch's raster index."""
    image = to_numpy(image)
    h, w = image.shape[:2]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    _image_with_grid(ax, image, patch_size)
    if numbers and (h // patch_size) * (w // patch_size) <= 64:
        for n, (r, c) in enumerate(np.ndindex(h // patch_size, w // patch_size)):
            ax.text(c * patch_size + patch_size / 2 - 0.5, r * patch_size + patch_size / 2 - 0.5, str(n),
                    ha="center", va="center", fontsize=8, color="yellow",
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])  # fmt: skip
    ax.set_title(f"{h}×{w} image, {patch_size}×{patch_size} patches: N = {(h // patch_size) * (w // patch_size)}")
    return fig


def show_patches(patches, patch_size, channels=3):
    """The rows of a (N, P²C) patch matrix as P×P×C tiles, in raster order, numbered."""
    patches = to_numpy(patches)
    tiles = patches.reshape(len(patches), patch_size, patch_size, channels)
    grid = round(np.sqrt(len(patches)))
    return show_images(tiles, titles=[str(i) for i in range(len(tiles))], ncols=grid, size=0.7,
                       suptitle=f"{len(tiles)} patches of {patch_size}×{patch_size}×{channels}")  # fmt: skip


def show_patch_matrix(patches):
    """The (N, P²C) patch matrix as an image: one row per patch."""
    patches = to_numpy(patches)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(patches, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel(f"P²C = {patches.shape[1]} values per patch (row-in-patch, column-in-patch, channel)")
    ax.set_ylabel(f"patch n (N = {patches.shape[0]})")
    ax.set_title(f"x_p: the {patches.shape[0]}×{patches.shape[1]} patch matrix")
    fig.colorbar(image, ax=ax, label="pixel value")
    return fig


def show_patch_grids(image, patch_sizes, size=2.6):
    """The same image (H, W, C) cut with each patch size P, side by side: the grid, N and T = N + 1."""
    image = to_numpy(image)
    h, w = image.shape[:2]
    fig = Figure(figsize=(size * len(patch_sizes), size + 0.5), layout="constrained")
    for ax, p in zip(np.atleast_1d(fig.subplots(1, len(patch_sizes))), patch_sizes, strict=True):
        _image_with_grid(ax, image, p, lw=0.5 if p <= 2 else 0.8)  # thin lines keep P = 2 visible
        n = (h // p) * (w // p)
        ax.set_title(f"P = {p}: N = {n}, T = {n + 1}", fontsize=10)
    return fig


def show_matrices(matrices, titles, suptitle=None):
    """2-D arrays side by side as heat maps (each on its own colour scale, blue < 0 < red), drawn to one
    scale (widths by columns, heights by rows), each labelled with its shape: a picture of how shapes combine."""
    matrices = [to_numpy(m) for m in matrices]
    widths = [m.shape[1] for m in matrices]
    width = min(13.0, 1.0 + sum(widths) / 45)
    tallest = max(m.shape[0] for m in matrices) * width / sum(widths)  # inches, at one cell size for all
    fig = Figure(figsize=(width, 1.0 + 1.1 * tallest), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(matrices), width_ratios=widths))
    for ax, m, title in zip(axes, matrices, titles, strict=True):
        scale = float(np.abs(m).max()) or 1.0
        # square cells and widths by columns: every panel's height follows its number of rows
        ax.imshow(m, aspect="equal", cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        ax.set_anchor("N")  # panels aligned at the top, so their heights compare
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{m.shape[0]} × {m.shape[1]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# -- what a trained ViT learned (Figure 7) --------------------------------------------------------


def plot_embedding_filters(weight, patch_size, channels=3, count=28):
    pcs = embedding_filters(weight, patch_size, channels, count)
    return show_images([_unit(p) for p in pcs], ncols=7, size=1.0,
                       suptitle="RGB embedding filters (first principal components)")  # fmt: skip


def plot_position_similarity(pos_embed, grid):
    """One small map per patch position, as in Figure 7 (centre)."""
    sim = position_similarity(pos_embed, grid)
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    axes = fig.subplots(grid, grid, squeeze=False)
    for r, c in np.ndindex(grid, grid):
        image = axes[r, c].imshow(sim[r, c], vmin=-1, vmax=1, cmap="viridis")
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
        if c == 0:
            axes[r, c].set_ylabel(str(r + 1), fontsize=8)
        if r == grid - 1:
            axes[r, c].set_xlabel(str(c + 1), fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
    fig.suptitle("Position embedding similarity (input patch row / column)")
    return fig


def plot_position_similarity_kinds(tables, grid):
    """Figure 10: the position-embedding similarity of several models side by side. tables: {title: E_pos
    (T, D) or (N, D)}; each panel tiles the grid × grid maps of `position_similarity`, patch (r, c)'s map
    at tile (r, c), with a one-pixel gap between tiles."""
    fig = Figure(figsize=(3.2 * len(tables) + 0.8, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tables), squeeze=False)).ravel()
    side = grid * (grid + 1) - 1
    for ax, (title, table) in zip(axes, tables.items()):
        mosaic = np.full((side, side), np.nan)
        for (r, c), tile in zip(np.ndindex(grid, grid), position_similarity(table, grid).reshape(-1, grid, grid)):
            mosaic[r * (grid + 1) : r * (grid + 1) + grid, c * (grid + 1) : c * (grid + 1) + grid] = tile
        image = ax.imshow(mosaic, vmin=-1, vmax=1, cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    return fig


def plot_attention_distance(attention_maps, grid, patch_size):
    """Mean attention distance of every head against network depth, one colour per head (legend
    "head h"); attention_maps: one (B, heads, T, T) array per block."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for depth, attn in enumerate(attention_maps, start=1):
        d = mean_attention_distance(attn, grid, patch_size)
        for head, distance in enumerate(d):  # coloured by head, as in the paper's Figure 7
            label = f"head {head + 1}" if depth == 1 else None
            ax.scatter(depth, distance, s=25, alpha=0.8, color=f"C{head % 10}", label=label)
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_ylim(0, patch_size * grid)
    ax.set_xticks(range(1, len(attention_maps) + 1))
    ax.set_title("Mean attention distance per head")
    ax.grid(alpha=0.3)
    return fig


def plot_attention(images, maps, titles=None):
    """Images (B, H, W, C) above their attention maps (B, N) upsampled to the image and overlaid."""
    images = to_numpy(images)
    maps = to_numpy(maps)
    grid = round(np.sqrt(maps.shape[1]))
    scale = images.shape[1] // grid
    fig = Figure(figsize=(1.8 * len(images), 3.9), layout="constrained")
    axes = fig.subplots(2, len(images), squeeze=False)
    for i, image in enumerate(images):
        heat = np.kron(_unit(maps[i].reshape(grid, grid)), np.ones((scale, scale)))
        axes[0, i].imshow(image)
        axes[1, i].imshow(image)
        axes[1, i].imshow(heat, cmap="inferno", alpha=0.6)
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=9)
        for ax in axes[:, i]:
            ax.set_axis_off()
    return fig


def plot_head_attention(images, attention_maps, index=0, query=0):
    """Every head's attention from one query token over the patches, for image `index`.

    images: (B, H, W, C) uint8 or floats in [0, 1]; attention_maps: one (B, heads, T, T) array per block
    (model.attention_maps()); query: the token whose row of A is shown: 0 is the class token when there
    is one, patch n is token T - N + n (outlined in cyan). The image comes first, then one row per block
    and one column per head. Each map runs from 0 (dark) to its own largest weight, given in its title,
    so a map bright all over is a head that spreads its attention evenly.
    """
    image = to_numpy(images)[index]
    maps = [to_numpy(a)[index] for a in attention_maps]  # (heads, T, T) per block
    depth, (heads, t, _) = len(maps), maps[0].shape
    n = t if round(np.sqrt(t)) ** 2 == t else t - 1  # patch tokens; the first token is the class token
    grid = round(np.sqrt(n))
    scale = image.shape[0] // grid
    fig = Figure(figsize=(1.6 * (heads + 1) + 0.3, 1.7 * depth + 0.5), layout="constrained")
    axes = fig.subplots(depth, heads + 1, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1:, 0]:
        ax.set_axis_off()
    for b, h in np.ndindex(depth, heads + 1):
        ax = axes[b, h]
        if h == 0 and b > 0:
            continue
        ax.imshow(image)
        if h == 0:
            ax.set_title("image", fontsize=8)
        else:
            row = maps[b][h - 1, query, t - n :]  # (N,) attention to the patches
            heat = ax.imshow(np.kron(row.reshape(grid, grid) / row.max(), np.ones((scale, scale))), cmap="inferno",
                             alpha=0.7, vmin=0, vmax=1)  # fmt: skip
            ax.set_title(f"head {h} (max {row.max():.3f})", fontsize=8)
            if h == 1:
                ax.set_ylabel(f"block {b + 1}")
        if query >= t - n:
            r, c = divmod(query - (t - n), grid)
            ax.add_patch(Rectangle((c * scale - 0.5, r * scale - 0.5), scale, scale, fill=False, ec="cyan", lw=1.5))
    fig.colorbar(heat, ax=axes, shrink=0.5, label="attention ÷ the map's largest weight (in its title)")
    who = "the class token" if query < t - n else f"patch {query - (t - n)}"
    fig.suptitle(f"Attention from {who} to the patches, per block and head", fontsize=11)
    return fig


# -- iGPT -------------------------------------------------------------------------------------------


def plot_completions(originals, completions, samples=None):
    """iGPT's Figure 1: each image's top half as given, the model's completions, and the original.

    originals: uint8 (M, S, S, 3); completions: uint8 (M, C, S, S, 3); samples: uint8 (N, S, S, 3)
    unconditional samples, drawn in a row above (optional).
    """
    originals, completions = to_numpy(originals), to_numpy(completions)
    m, c, s = completions.shape[:3]
    n = 0 if samples is None else len(samples)
    cols = max(c + 2, n)
    rows = m + (n > 0)
    fig = Figure(figsize=(1.1 * cols, 1.2 * rows + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    if n:
        for j, image in enumerate(to_numpy(samples)):
            axes[0, j].imshow(image)
        axes[0, 0].set_title("unconditional samples", fontsize=8, loc="left")
    for i in range(m):
        row = axes[i + (n > 0)]
        given = originals[i].copy()
        given[s // 2 :] = 128  # the hidden bottom half, grey
        row[0].imshow(given)
        for j in range(c):
            row[j + 1].imshow(completions[i, j])
        row[c + 1].imshow(originals[i])
        if i == 0:
            row[0].set_title("given", fontsize=8)
            row[1].set_title("completions →", fontsize=8, loc="left")
            row[c + 1].set_title("original", fontsize=8)
    return fig


def plot_pixel_attention(attention, size, query, image=None):
    """Which earlier pixels an iGPT position attends to. attention: one image's weights per layer, averaged
    over heads, (L, T, T) (query i, key j; key 0 is SOS, key j >= 1 holds pixel j - 1: the input is shifted);
    query: the position (= the pixel it predicts, in raster order). One panel per layer: each earlier
    pixel's weight on the size × size grid (the query's pixel and everything after it: no weight), the
    weight on SOS in the title; image (size, size, 3) uint8 first, the query's pixel marked on it."""
    attention = to_numpy(attention)
    panels = len(attention) + (image is not None)
    fig = Figure(figsize=(2.6 * panels, 2.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    row, col = divmod(query, size)
    if image is not None:
        axes[0].imshow(to_numpy(image), interpolation="nearest")
        axes[0].set_title("the image", fontsize=9)
    for layer, (ax, weights) in enumerate(zip(axes[panels - len(attention) :], attention, strict=True)):
        grid = np.full(size * size, np.nan)
        grid[:query] = weights[query, 1 : query + 1]  # pixels 0 … query-1, read at keys 1 … query
        shown = ax.imshow(grid.reshape(size, size), cmap="magma", vmin=0, interpolation="nearest")
        ax.set_title(f"layer {layer}: SOS {weights[query, 0]:.2f}", fontsize=9)
        fig.colorbar(shown, ax=ax, shrink=0.7)
    for ax in axes:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"attention of the position predicting pixel ({row}, {col}), mean over heads (cyan: that pixel)",
                 fontsize=10)  # fmt: skip
    return fig


def plot_position_loss(nats, size):
    """An iGPT's next-token loss at each position (T,), as the size × size image grid it predicts."""
    grid = to_numpy(nats).reshape(size, size)
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(grid, cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="nats per token")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(f"loss at each pixel: first row {grid[0].mean():.2f}, first column {grid[1:, 0].mean():.2f}, "
                 f"the rest {grid[1:, 1:].mean():.2f}", fontsize=9)  # fmt: skip
    return fig


def plot_palette(centers, columns=32):
    """A palette's K colours (K, 3) in [0, 255] as a swatch, sorted by hue, dark to bright within a hue band."""
    from matplotlib.colors import rgb_to_hsv

    colours = np.clip(to_numpy(centers), 0, 255) / 255.0
    hsv = rgb_to_hsv(colours)
    grey = hsv[:, 1] < 0.15  # nearly colourless: one band of their own, by brightness
    band = np.where(grey, -1, np.floor(hsv[:, 0] * 12))  # 12 hue bands
    order = np.lexsort((hsv[:, 2], band))
    rows = -(-len(colours) // columns)
    grid = np.ones((rows * columns, 3))
    grid[: len(colours)] = colours[order]
    fig = Figure(figsize=(columns * 0.25 + 0.4, rows * 0.25 + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(grid.reshape(rows, columns, 3), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"the palette's {len(colours)} colours (greys first, then by hue; white cells: unused)", fontsize=9)
    return fig


def plot_probe(curves, baselines=None):
    """Linear-probe test accuracy against layer (the shape of iGPT's Figure 3).

    curves: {name: [accuracy of layer 0, 1, ..., L]} (e.g. the pretrained model and the same model at
    its random initialisation); baselines: {name: accuracy} drawn as dashed lines (e.g. raw pixels).
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for (name, accuracies), marker in zip(curves.items(), "os^v"):
        ax.plot(range(len(accuracies)), np.asarray(accuracies) * 100, f"{marker}-", label=name)
    for (name, accuracy), color in zip((baselines or {}).items(), ("tab:grey", "tab:purple")):
        ax.axhline(accuracy * 100, color=color, ls="--", lw=1, label=name)
    depth = max(len(a) for a in curves.values()) - 1
    ax.set_xticks(range(depth + 1), [str(i) for i in range(depth)] + [f"{depth}\n(final LN)"])
    ax.set_xlabel("layer l (features: mean over positions of LN(h_l), the input of block l)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Linear probe accuracy per layer")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_experiment(results):
    """An experiment's rows (minivit.experiments): each row's accuracy on the validation images and on the
    test images, a dot per seed and a bar at the mean, from zero."""
    rows = results["rows"]
    fig = Figure(figsize=(max(6.5, 1.6 * len(rows) + 2), 4), layout="constrained")
    ax = fig.subplots()
    for offset, part, color in ((-0.2, "val", "tab:orange"), (0.2, "test", "tab:blue")):
        for i, scores in enumerate(rows.values()):
            a = np.asarray(scores[part]) * 100
            label = {"val": "validation (held-out training images)", "test": "test"}[part] if i == 0 else None
            ax.bar(i + offset, a.mean(), width=0.38, color=color, alpha=0.6, label=label)
            ax.plot([i + offset] * len(a), a, "o", color="black", ms=3)
    ax.set_xticks(range(len(rows)), [label.replace(", ", ",\n") for label in rows], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, None)  # bars from zero: a bar's height is its value, the gaps as large as they are
    seeds = results["seeds"]
    bars = f"bars: seed {seeds[0]}" if len(seeds) == 1 else f"bars: the mean over seeds {', '.join(map(str, seeds))}"
    ax.set_title(f"{results['title']}\n{bars}; dots: each seed", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    return fig
