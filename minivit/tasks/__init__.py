"""Training tasks other than the ViT classifier (which is `minivit.train.Classify`, the loop's default).

A task is what differs between runs of the one loop in minivit/train.py: which model it builds, how a
batch becomes a loss and gradients, how it is evaluated, and what else a checkpoint must carry. See
`minivit.train.Classify` for the attributes every task has.
"""


def eval_parts(data):
    """The parts of a data.Split a task scores after every epoch: the validation images when the run
    holds some out (TrainConfig.val_size), then the test images."""
    return ("val", "test") if len(data.val_images) else ("test",)


def scores(m, key, fmt):
    """'val X  test Y' (or 'test Y') of metric `key` in an epoch's metrics `m`."""
    return "  ".join(f"{part} {m[f'{part}_{key}']:{fmt}}" for part in ("val", "test") if f"{part}_{key}" in m)


def best_epoch(history):
    """The metrics of the epoch a run is chosen at: the best validation accuracy (the lowest validation
    loss for a task without one). None when the run held no images out: a best picked on the test
    images would flatter the run, so only its last epoch is reported then."""
    if not history or "val_loss" not in history[0]:
        return None
    if "val_accuracy" in history[0]:
        return max(history, key=lambda m: m["val_accuracy"])
    return min(history, key=lambda m: m["val_loss"])


class ClassificationMetrics:
    """The epoch metrics and log line of a task that classifies (a ViT's, iGPT fine-tuning's, masked patch
    prediction's colours): its train_step counts the correct predictions in the running sum "correct", out
    of the running sum named by `predictions` (one prediction per image, "seen", unless it says otherwise)."""

    sums = ("correct",)  # running sums over an epoch's steps, besides the loss and the images seen
    predictions = "seen"
    accuracy_label = "acc"

    @classmethod
    def epoch_metrics(cls, sums):
        return {"train_loss": sums["loss"] / sums["seen"], "train_accuracy": sums["correct"] / sums[cls.predictions]}

    @classmethod
    def summary(cls, m):
        """One line of an epoch's metrics, for the log and the command line."""
        acc = cls.accuracy_label
        return (f"train loss {m['train_loss']:.4f} {acc} {m['train_accuracy']:.4f}  loss: {scores(m, 'loss', '.4f')}"
                f"  {acc}: {scores(m, 'accuracy', '.4f')}")  # fmt: skip
