"""The training tasks: what differs between runs of the one loop (minivit/train.py). base.py says what a
task is; each file beside it is one task. TASKS, by TrainConfig.task, is the only place a task's name
chooses its code."""

from .base import Classification, Task, best_epoch, eval_parts, scores
from .classify import Classify
from .igpt import Finetune, Pretrain
from .masked_patches import MaskedPatches

TASKS = {task.name: task for task in (Classify, Pretrain, Finetune, MaskedPatches)}


def of_checkpoint(meta, path, command):
    """The Task class of a checkpoint (its meta, as load_checkpoint returns it) for `command` of the
    command line; a ValueError naming the tasks whose checkpoints `command` takes when its task is not one."""
    task = TASKS[meta["train"].get("task", "classify")]
    if command not in task.commands:
        takers = " or ".join(name for name, t in TASKS.items() if command in t.commands)
        raise ValueError(f"{path} is a checkpoint of task {task.name!r} ({task.description}); {command} takes "
                         f"one of task {takers}")  # fmt: skip
    return task


__all__ = ["TASKS", "Classification", "Classify", "Finetune", "MaskedPatches", "Pretrain", "Task", "best_epoch",
           "eval_parts", "of_checkpoint", "scores"]  # fmt: skip
