"""Training tasks other than the ViT classifier (which is `minivit.train.Classify`, the loop's default).

A task is what differs between runs of the one loop in minivit/train.py: which model it builds, how a
batch becomes a loss and gradients, how it is evaluated, and what else a checkpoint must carry. See
`minivit.train.Classify` for the attributes every task has.
"""


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
        return (f"train loss {m['train_loss']:.4f} {acc} {m['train_accuracy']:.4f}  test loss {m['test_loss']:.4f} "
                f"{acc} {m['test_accuracy']:.4f}")  # fmt: skip
