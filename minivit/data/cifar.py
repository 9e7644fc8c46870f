"""CIFAR-10 and CIFAR-100: download, verify, unpack and cache as uint8 NHWC arrays.

    data = load_cifar("cifar10")                       # downloads once, then reads the cache
    data = load_cifar("cifar10", source="cifar-10-python.tar.gz")   # a local archive or folder
    data.train_images  # (50000, 32, 32, 3) uint8      data.train_labels  # (50000,) int64

Where the arrays come from decides how they are checked:
  - a download from the official URL: the official md5 of the archive file;
  - a local archive or unpacked folder (a copy may be re-packed, so its file md5 proves nothing):
    its structure, and for CIFAR-10 the md5 of its pixel and label arrays.
The cache (`<data dir>/<name>.npz`) and a downloaded archive are written to a temporary file and
renamed into place, so an interrupted run never leaves a half file that a later run would trust.
"""

import hashlib
import http.client
import io
import os
import pickle
import tarfile
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_file, save_npz


class DataError(Exception):
    """A dataset that cannot be fetched or does not check out; the message says which file and why."""


@dataclass(frozen=True)
class CifarSpec:
    """What one CIFAR archive must contain, and how to check it."""

    name: str
    url: str
    md5: str  # of the official archive file
    folder: str  # the folder inside the archive
    train_members: tuple
    test_members: tuple
    meta_member: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple  # per-channel mean and std of pixel / 255 over the training set
    std: tuple
    # md5 of the uint8 arrays (data in the archive's (n, 3072) CHW rows; labels as uint8), when known
    content_md5: dict = field(default_factory=dict)

    @property
    def filename(self):
        return self.url.rsplit("/", 1)[-1]


CIFAR10 = CifarSpec(
    name="cifar10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_members=("test_batch",),
    meta_member="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    content_md5={
        "train_data": "11af95666bd6fd7846144e768325bf13",
        "train_labels": "69c5f3349be54915edfca558b72ad888",
        "test_data": "f1aa22116df97725db0e47461c45a82b",
        "test_labels": "251f18ce75337ae9ca5d0dbd7ea62cf4",
    },
)

CIFAR100 = CifarSpec(
    name="cifar100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train_members=("train",),
    test_members=("test",),
    meta_member="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)

DATASETS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


class Dataset(NamedTuple):
    train_images: np.ndarray  # (N_train, 32, 32, 3) uint8, NHWC
    train_labels: np.ndarray  # (N_train,) int64
    test_images: np.ndarray  # (N_test, 32, 32, 3) uint8
    test_labels: np.ndarray  # (N_test,) int64
    classes: tuple  # class names, indexed by label


class Split(NamedTuple):
    """The images of one run: what it trains on, what it chooses on, what it is scored on."""

    train_images: np.ndarray  # (N_train, H, W, C) uint8
    train_labels: np.ndarray  # (N_train,) int64
    val_images: np.ndarray  # (N_val, H, W, C) uint8: held-out training images, never trained on
    val_labels: np.ndarray  # (N_val,) int64
    test_images: np.ndarray  # (N_test, H, W, C) uint8
    test_labels: np.ndarray  # (N_test,) int64
    classes: tuple

    def part(self, name):
        """(images, labels) of "train", "val" or "test"."""
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


def split(data, train_subset=0, val_size=0, test_subset=0):
    """A Dataset split for one run: the validation set is the *last* `val_size` training images, the
    training set the first `train_subset` of the others (0: all of them), the test set the first
    `test_subset` test images (0: all).

    CIFAR's training batches are in random order, so the last images are a fixed random sample (about
    val_size / 10 per class in CIFAR-10), the same for every run whatever its train_subset: runs that
    train on the first 10,000 images are chosen among on the same held-out images, and their training
    sets are what they were before a validation set existed. A "best" epoch, learning rate or row is
    chosen on these; the test images only report what was chosen.
    """
    n = len(data.train_images)
    for name, value in (("train_subset", train_subset), ("val_size", val_size), ("test_subset", test_subset)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if val_size >= n:
        raise ValueError(f"val_size {val_size} leaves none of the {n} training images to train on")
    if train_subset > n - val_size:
        held = f" and the {val_size} validation images (the last ones) leave {n - val_size}" if val_size else ""
        raise ValueError(f"train_subset {train_subset} is more than the {n} training images there are{held}")
    if test_subset > len(data.test_images):
        raise ValueError(f"test_subset {test_subset} is more than the {len(data.test_images)} test images there are")
    n_train, n_test = train_subset or n - val_size, test_subset or len(data.test_images)
    return Split(data.train_images[:n_train], data.train_labels[:n_train], data.train_images[n - val_size :],
                 data.train_labels[n - val_size :], data.test_images[:n_test], data.test_labels[:n_test],
                 data.classes)  # fmt: skip


def default_data_dir():
    """$MINIVIT_DATA, else $XDG_CACHE_HOME/minivit, else ~/.cache/minivit."""
    if os.environ.get("MINIVIT_DATA"):
        return Path(os.environ["MINIVIT_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minivit"


def get_spec(dataset):
    if isinstance(dataset, CifarSpec):
        return dataset
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def load_cifar(dataset="cifar10", data_dir=None, source=None, download=True):
    """Load a CIFAR dataset as uint8 NHWC arrays, building the cache on first use.

    dataset: "cifar10", "cifar100" or a CifarSpec
    data_dir: where the archive and cache live (default: default_data_dir())
    source: a local .tar.gz archive or an unpacked folder to read instead of downloading
    download: fetch the official archive when neither the cache nor `source` has the data

    A cache that is already there wins over `source` (both hold the same checked arrays); delete
    `<data_dir>/<name>.npz` to rebuild it.
    """
    spec = get_spec(dataset)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if source is not None and not Path(source).exists():
        raise DataError(f"{source} does not exist (expected a {spec.filename} archive or its unpacked folder)")
    cache = data_dir / f"{spec.name}.npz"
    if cache.exists():
        data = _read_cache(cache, spec)
        if data is not None:
            return data
    if source is not None:
        data = read_archive(source, spec, trusted=False)
    else:
        archive = data_dir / spec.filename
        if archive.exists():
            # ours only if its md5 is the official one (downloads are renamed in only after that check);
            # otherwise someone put a copy there, checked like any local archive
            data = read_archive(archive, spec, trusted=file_md5(archive) == spec.md5)
        elif download:
            download_file(spec.url, archive, spec.md5)
            data = read_archive(archive, spec, trusted=True)
        else:
            raise DataError(
                f"{spec.name} is not in {data_dir} and downloading is off; use a local copy of the archive "
                "(--archive PATH on the command line, source=PATH in Python)"
            )
    _write_cache(cache, data)
    return data


def file_md5(path, chunk=1 << 20):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url, path, md5):
    """Stream `url` to `path` with a progress bar; the file appears only once its md5 is `md5`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with atomic_file(path, prefix=".download-") as out:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {path.name}") as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        # URLError, HTTPError, timeouts and resets are OSErrors; a cut chunked transfer is an IncompleteRead
        except (OSError, http.client.HTTPException) as e:
            raise DataError(
                f"could not download {url}: {e}. Check the connection and run again (it starts over), "
                "or use a local copy of the archive (--archive PATH on the command line, source=PATH in Python)"
            ) from e
        if digest.hexdigest() != md5:
            raise DataError(
                f"the file downloaded from {url} has md5 {digest.hexdigest()}, expected {md5}: "
                "the transfer was corrupted or cut short. Nothing was kept; run again to retry"
            )


def read_archive(source, spec, trusted=False):
    """Read and check a CIFAR archive (.tar.gz) or unpacked folder into a Dataset; writes nothing.

    trusted: the file's md5 was already found to be the official one, so skip the content checksums.
    """
    source = Path(source)
    if source.is_dir():
        folder = source / spec.folder if (source / spec.folder).is_dir() else source

        def read_member(name):
            path = folder / name
            if not path.is_file():
                raise DataError(f"{folder} has no file {name!r} (expected the unpacked {spec.folder}/ folder)")
            return path.read_bytes()

        data = _parse(read_member, spec, source)
    elif source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:

                def read_member(name):
                    member = None
                    for path in (f"{spec.folder}/{name}", f"./{spec.folder}/{name}"):  # "./": packed with tar -C
                        try:
                            member = tar.extractfile(path)
                            break
                        except KeyError:
                            continue
                    if member is None:
                        raise DataError(f"{source} has no member {spec.folder}/{name} (is it the {spec.name} archive?)")
                    return member.read()

                data = _parse(read_member, spec, source)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(
                f"{source} is not a readable .tar.gz archive ({e}): it may be truncated or corrupted; "
                "delete it and fetch it again"
            ) from e
    else:
        raise DataError(f"{source} does not exist (expected a {spec.filename} archive or its unpacked folder)")
    if not trusted:
        _check_content(data, spec, source)
    train_data, train_labels, test_data, test_labels, classes = data
    return Dataset(_to_nhwc(train_data), train_labels, _to_nhwc(test_data), test_labels, classes)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only: a pickle can name any function to call, and a
    local archive is not trusted until its content is checked."""

    allowed = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {  # encode: bytes in protocol 2
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
        for name in ("_reconstruct", "_frombuffer")
    }

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays and lists)")
        return super().find_class(module, name)


def _parse(read_member, spec, source):
    """Unpickle the batches into NHWC arrays, checking every shape, dtype and label on the way."""

    def load(name):
        payload = read_member(name)  # outside the try: a truncated archive is reported as such, not as a bad pickle
        try:
            batch = _ArrayUnpickler(io.BytesIO(payload), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
            raise DataError(f"{source}: member {name!r} is not a readable pickle ({e})") from e
        if not isinstance(batch, dict):
            raise DataError(f"{source}: member {name!r} holds a {type(batch).__name__}, expected a dict")
        return batch

    def split(members):
        images, labels = [], []
        for name in members:
            batch = load(name)
            missing = [k.decode() for k in (b"data", spec.label_key) if k not in batch]
            if missing:
                raise DataError(f"{source}: member {name!r} has no {missing} entry")
            data = np.asarray(batch[b"data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(
                    f"{source}: member {name!r} has data {data.dtype} {data.shape}, expected uint8 (n, 3072)"
                )
            y = np.asarray(batch[spec.label_key])
            if y.shape != (data.shape[0],) or y.dtype.kind not in "iu":
                raise DataError(
                    f"{source}: member {name!r} has {y.shape[0] if y.ndim else 0} labels for {data.shape[0]} images"
                )
            if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
                raise DataError(f"{source}: member {name!r} has labels outside [0, {spec.num_classes})")
            images.append(data)
            labels.append(y)
        return np.concatenate(images), np.concatenate(labels).astype(np.int64)

    train_data, train_labels = split(spec.train_members)
    test_data, test_labels = split(spec.test_members)
    meta = load(spec.meta_member)
    names = meta.get(spec.names_key)
    if names is None or len(names) != spec.num_classes:
        raise DataError(f"{source}: {spec.meta_member!r} does not list {spec.num_classes} class names")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return train_data, train_labels, test_data, test_labels, classes


def _check_content(data, spec, source):
    train_data, train_labels, test_data, test_labels, _ = data
    arrays = {"train_data": train_data, "train_labels": train_labels.astype(np.uint8),
              "test_data": test_data, "test_labels": test_labels.astype(np.uint8)}  # fmt: skip
    for key, expected in spec.content_md5.items():
        got = hashlib.md5(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
        if got != expected:
            raise DataError(
                f"{source}: {key.replace('_', ' ')} has md5 {got}, expected {expected}: it is not {spec.name} "
                "(or it was modified)"
            )


def _to_nhwc(rows):
    """(n, 3072) rows of 1024 red, 1024 green, 1024 blue -> (n, 32, 32, 3)."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _write_cache(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, {**data._asdict(), "classes": np.array(data.classes)})


def _read_cache(path, spec):
    """The cached Dataset, or None (with a warning) when the file is not a complete cache."""
    keys = ("train_images", "train_labels", "test_images", "test_labels", "classes")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, zlib.error, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable cache {path} ({e}); rebuilding it", stacklevel=3)
        return None
    ok = (
        arrays["train_images"].dtype == np.uint8
        and arrays["train_images"].shape[1:] == (32, 32, 3)
        and arrays["test_images"].shape[1:] == (32, 32, 3)
        and len(arrays["train_labels"]) == len(arrays["train_images"])
        and len(arrays["test_labels"]) == len(arrays["test_images"])
        and len(arrays["classes"]) == spec.num_classes
    )
    if not ok:
        warnings.warn(f"ignoring cache {path}: its arrays have the wrong shapes; rebuilding it", stacklevel=3)
        return None
    return Dataset(*(arrays[k] for k in keys[:4]), tuple(str(c) for c in arrays["classes"]))
