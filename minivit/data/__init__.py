"""Datasets (CIFAR-10/100: download, verify, cache) and augmentation on the backend's arrays."""

from .augment import augment, cutmix, epoch_batches, mixup, normalize, one_hot, random_crop, random_flip
from .cifar import (
    CIFAR10,
    CIFAR100,
    DATASETS,
    CifarSpec,
    DataError,
    Dataset,
    Split,
    default_data_dir,
    load_cifar,
    read_archive,
    split,
)

__all__ = [
    "CIFAR10", "CIFAR100", "DATASETS", "CifarSpec", "DataError", "Dataset", "augment", "cutmix", "default_data_dir",
    "epoch_batches", "load_cifar", "mixup", "normalize", "one_hot", "random_crop", "random_flip", "read_archive",
    "Split", "split",
]  # fmt: skip
