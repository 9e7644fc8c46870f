"""Plots for runs and notebooks. Each function returns a matplotlib Figure (no global pyplot state),
so it works the same in a notebook cell and in a headless training run."""

from matplotlib.figure import Figure


def plot_curves(history):
    """Learning curves from a run's metrics (a list of per-epoch dicts, as in metrics.jsonl):
    loss and accuracy against epoch, train and test."""
    epochs = [m["epoch"] for m in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.plot(epochs, [m[f"train_{key}"] for m in history], "o-", label="train (augmented)")
        ax.plot(epochs, [m[f"test_{key}"] for m in history], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if history:
        best = max(m["test_accuracy"] for m in history)
        fig.suptitle(f"{len(history)} epochs, best test accuracy {best:.1%}")
    return fig
