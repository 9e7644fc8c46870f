"""What a task is: the contract between a task and the one training loop (minivit/train.py) and the
command line (minivit/__main__.py), and the helpers tasks share.

A task is what differs between runs: which model it trains, how a batch becomes a loss and its
gradients, how it is evaluated, what else a checkpoint must carry, and which commands apply to its
checkpoints. Adding one: subclass Task (or Classification), fill in the members below, and add the
class to TASKS in minivit/tasks/__init__.py; `TrainConfig(task=...)` and every command then know it.
"""


class Task:
    """The contract. Class members, read before any data is loaded:

    name            the TrainConfig.task that selects it
    description     a few words for messages, e.g. "iGPT's next-pixel pretraining"
    models          the Modules it trains (each with config_class and from_config): model_for(config) picks
                    the one a model config is for; a checkpoint names its own (load_checkpoint)
    model_fields    the TrainConfig fields that override the model preset's (dim, depth, ...)
    not_applicable  {TrainConfig field: its off value}: another task's settings, an error when set
    preset(name, num_classes, **overrides)   the model's config from a preset's name
    sums            running sums over an epoch's steps, besides the loss and the images seen
    commands        the commands of `python -m minivit` that apply to its checkpoints
    data_parallel   whether its batches can be split over processes (mpiexec; minivit/distributed.py)

    Built from a TrainConfig, the run's data.Split and, when the run resumes or starts from a
    checkpoint, that checkpoint's arrays (TASKS[name](config, data, arrays)):

    num_train       training images
    eval_parts      the parts of the Split scored after every epoch ("val" when held out, "test")
    meta, arrays    what the checkpoint carries besides the model and optimiser (JSON; NumPy arrays)
    train_step(model, idx, rng, rows) -> loss, {sum: count}
                    forward, loss and backward of one batch: idx its image indices, rng its augmentation's
                    draws, both for the whole batch; this process computes its rows of it only (slice(None)
                    on one process; see minivit/distributed.py) and returns its share of the batch's loss
                    (its rows' losses over the whole batch's count), the gradients of that share, and the
                    sums over its rows
    evaluate(model, part, rows) -> {"loss", ...}         metrics on a part's images (rows of them: on several
                                                         processes each scores its block), in eval mode; each
                                                         metric is a mean over the images
    eval_size(part) -> n                                 how many images a part holds
    epoch_metrics(sums) -> {"train_loss", ...}           an epoch's training metrics from its sums
    summary(m) -> str                                    one log line of an epoch's metrics
    report(metrics, count) -> str                        the evaluate command's line for a test score
    """

    name = description = None
    models = ()
    model_fields = ()
    not_applicable = {}
    sums = ()
    commands = ("evaluate",)
    data_parallel = True

    @staticmethod
    def preset(name, num_classes, **overrides):
        raise NotImplementedError

    @classmethod
    def model_for(cls, config):
        """The model class of `models` that a model config (a ViTConfig, a ResNetConfig, ...) is for."""
        return next(model for model in cls.models if type(config) is model.config_class)

    def train_step(self, model, idx, rng, rows=slice(None)):
        raise NotImplementedError

    def evaluate(self, model, part, rows=slice(None)):
        raise NotImplementedError

    def eval_size(self, part):
        raise NotImplementedError

    @staticmethod
    def epoch_metrics(sums):
        return {"train_loss": sums["loss"] / sums["seen"]}

    def summary(self, m):
        raise NotImplementedError

    def report(self, metrics, count):
        raise NotImplementedError

    # What the commands other than evaluate need, for the tasks that list them in `commands`:
    @classmethod
    def image_logits(cls, model, meta, arrays, pixels):
        """predict: class logits (C,) of one uint8 image (S, S, 3), S = cls.input_side(model)."""
        raise NotImplementedError

    @classmethod
    def input_side(cls, model):
        """predict: the side an image file is resized to before image_logits."""
        raise NotImplementedError

    @classmethod
    def palette(cls, arrays, backend_name):
        """sample, probe: the palette the checkpoint's model reads its tokens in."""
        raise NotImplementedError


class Classification(Task):
    """A task that classifies (a ViT's classes, iGPT fine-tuning's, masked patch prediction's colours): its
    train_step counts the correct predictions in the running sum "correct", out of the running sum named
    by `predictions` (one prediction per image, "seen", unless it says otherwise); its evaluate gives
    "loss" and "accuracy", and "predictions" per image when they are the dataset's classes."""

    sums = ("correct",)
    predictions = "seen"
    accuracy_label = "acc"
    accuracy_name = "accuracy"

    @classmethod
    def epoch_metrics(cls, sums):
        return {"train_loss": sums["loss"] / sums["seen"], "train_accuracy": sums["correct"] / sums[cls.predictions]}

    def summary(self, m):
        acc = self.accuracy_label
        return (f"train loss {m['train_loss']:.4f} {acc} {m['train_accuracy']:.4f}  loss: {scores(m, 'loss', '.4f')}"
                f"  {acc}: {scores(m, 'accuracy', '.4f')}")  # fmt: skip

    def report(self, metrics, count):
        return f"test {self.accuracy_name} {metrics['accuracy']:.2%} on {count} images, loss {metrics['loss']:.4f}"


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
