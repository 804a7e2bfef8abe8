"""Image-classification datasets for keras_ssm: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Everything works offline from local files; tensorflow-datasets is only a fallback.

Where the data comes from, in this order:

1. A local folder: the ``data_dir`` argument, else the environment variable
   ``KERAS_SSM_DATA_DIR``. The folder may hold one subfolder per dataset (``mnist/``,
   ``fashion-mnist/`` or ``fashion_mnist/``, ``cifar10/``, ``cifar100/``), or it may be the
   dataset folder itself. Layouts that are understood:

   * MNIST / Fashion-MNIST: the four original idx files (``train-images-idx3-ubyte.gz``,
     ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
     ``t10k-labels-idx1-ubyte.gz``), gzipped or not.
   * CIFAR: ``train_part1.npz`` ... ``train_partK.npz`` (``x_train`` uint8 NHWC, ``y_train``)
     or ``train.npz``, plus ``test.npz`` (``x_test``, ``y_test``); the official python
     tarballs ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``; or their extracted
     folders ``cifar-10-batches-py/`` / ``cifar-100-python/`` (CIFAR-100 uses fine labels).

2. tensorflow-datasets, if the dataset is already prepared in its data dir (``TFDS_DATA_DIR``
   or ``~/tensorflow_datasets``), then a tfds download, attempted only when a 2-second
   socket probe of ``storage.googleapis.com:443`` succeeds and ``KERAS_SSM_OFFLINE`` is not
   set to ``1``.

If nothing works, :class:`DataNotFoundError` lists every place that was looked at.

Safety: the CIFAR python batches are pickles. They are read by :class:`_SafeUnpickler`, which
hands out only inert stand-ins defined in this module for the few globals these files use
(numpy's array/dtype reconstructors and ``_codecs.encode``). No callable named by the file is
ever imported or called, so a malicious pickle cannot execute code; it is rejected with a
:class:`DataFormatError`. Declared sizes (idx headers, npy headers, tar members) are checked
before memory is allocated.

Example (with ``KERAS_SSM_DATA_DIR`` pointing at a folder that holds ``mnist/``):

>>> from keras_ssm import data
>>> ds = data.load("mnist", batch_size=64, limit=256, seed=0)
>>> images, labels = next(iter(ds))
>>> tuple(images.shape), images.dtype.name, labels.dtype.name
((64, 28, 28, 1), 'float32', 'int32')
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import io
import lzma
import math
import os
import pickle
import pickletools
import re
import socket
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "info",
    "load",
    "load_arrays",
    "load_epochs",
    "standardize_images",
]

DATA_DIR_ENV = "KERAS_SSM_DATA_DIR"
OFFLINE_ENV = "KERAS_SSM_OFFLINE"
PROBE_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 2.0
SPLITS = ("train", "test")

_MAX_EXAMPLES = 10_000_000  # sanity bound on declared example counts
_MAX_MEMBER_BYTES = 1 << 30  # sanity bound on a single tar member

Array = np.ndarray
Split = tuple[Array, Array]
Arrays = tuple[Split, Split]
PathLike = str | os.PathLike[str]


class DataNotFoundError(FileNotFoundError):
    """No source holds the requested dataset; the message lists every place looked at.

    Attributes:
        name: the dataset name.
        searched: one human-readable line per place that was tried.
    """

    def __init__(self, name: str, searched: list[str], hint: str) -> None:
        lines = [f"No data found for dataset {name!r}. Looked in:"]
        lines += [f"  - {line}" for line in searched]
        lines.append(hint)
        super().__init__("\n".join(lines))
        self.name = name
        self.searched = list(searched)


class DataFormatError(ValueError):
    """A data file exists but is corrupt, truncated or inconsistent (message names the file)."""


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static facts about one dataset."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    folders: tuple[str, ...]
    family: str  # "idx" or "cifar"
    tfds_name: str
    tar_name: str = ""  # official python tarball (CIFAR only)
    py_folder: str = ""  # folder inside the tarball
    py_train: tuple[str, ...] = ()  # pickled training batches
    py_test: str = ""  # pickled test batch
    label_key: str = "labels"


_SPECS: dict[str, _Spec] = {
    spec.name: spec
    for spec in (
        _Spec("mnist", (28, 28, 1), 10, 60_000, 10_000, ("mnist",), "idx", "mnist"),
        _Spec(
            "fashion_mnist",
            (28, 28, 1),
            10,
            60_000,
            10_000,
            ("fashion-mnist", "fashion_mnist"),
            "idx",
            "fashion_mnist",
        ),
        _Spec(
            "cifar10",
            (32, 32, 3),
            10,
            50_000,
            10_000,
            ("cifar10", "cifar-10"),
            "cifar",
            "cifar10",
            tar_name="cifar-10-python.tar.gz",
            py_folder="cifar-10-batches-py",
            py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            py_test="test_batch",
        ),
        _Spec(
            "cifar100",
            (32, 32, 3),
            100,
            50_000,
            10_000,
            ("cifar100", "cifar-100"),
            "cifar",
            "cifar100",
            tar_name="cifar-100-python.tar.gz",
            py_folder="cifar-100-python",
            py_train=("train",),
            py_test="test",
            label_key="fine_labels",
        ),
    )
}

DATASETS: tuple[str, ...] = tuple(_SPECS)
"""Names accepted by :func:`load`, :func:`load_arrays` and :func:`info`."""

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def info(name: str) -> dict[str, Any]:
    """Static facts about a dataset (canonical sizes, not the sizes of local files).

    Example:
        >>> facts = info("cifar10")
        >>> facts["input_shape"], facts["num_classes"], facts["train_size"], facts["test_size"]
        ((32, 32, 3), 10, 50000, 10000)
    """
    spec = _spec(name)
    return {
        "name": spec.name,
        "input_shape": spec.input_shape,
        "num_classes": spec.num_classes,
        "train_size": spec.train_size,
        "test_size": spec.test_size,
    }


def load_arrays(name: str, data_dir: PathLike | None = None) -> Arrays:
    """Load a whole dataset as numpy arrays: ``((x_train, y_train), (x_test, y_test))``.

    Images are uint8 NHWC (MNIST-style data gets a trailing channel axis of 1), labels int32.
    Arrays parsed from local files are cached in-process (keyed on the resolved file paths,
    sizes and modification times) and returned read-only: copy them before modifying.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: folder holding the data (see the module docstring); defaults to the
            ``KERAS_SSM_DATA_DIR`` environment variable, then tensorflow-datasets.

    Raises:
        ValueError: unknown ``name``.
        DataNotFoundError: no source holds the data.
        DataFormatError: a data file is corrupt, truncated or inconsistent.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_arrays("mnist")
        >>> x_train.shape[1:], x_train.dtype.name, y_train.dtype.name
        ((28, 28, 1), 'uint8', 'int32')
    """
    spec = _spec(name)
    searched: list[str] = []
    source = _find_local(spec, data_dir, searched)
    if source is not None:
        return _read_source(spec, source)
    arrays = _load_from_tfds(spec, searched)
    if arrays is not None:
        return arrays
    raise DataNotFoundError(spec.name, searched, _how_to_supply(spec))


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int = 128,
    shuffle: bool | None = None,
    augment: bool = False,
    standardize: bool = True,
    data_dir: PathLike | None = None,
    seed: int | None = None,
    limit: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched, prefetched ``tf.data.Dataset`` of ``(image float32 NHWC, label int32)``.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        batch_size: examples per batch.
        shuffle: shuffle the whole split, differently each epoch; defaults to ``True`` for
            ``"train"`` and ``False`` otherwise.
        augment: pad by 4 pixels (with zeros, i.e. the image mean after standardization),
            randomly crop back and randomly flip left-right, independently per image.
        standardize: per-image standardization as in the paper,
            ``(x - mean) / max(std, 1 / sqrt(N))`` (``tf.image.per_image_standardization``,
            equal to :func:`standardize_images`); when ``False`` pixels are scaled to
            ``[0, 1]``. It is applied per batch to the in-memory uint8 images, which is
            much faster to set up and 4x smaller than a precomputed float32 copy.
        data_dir: folder holding the data (see :func:`load_arrays`).
        seed: makes shuffling and augmentation deterministic (same batches for the same
            seed, still a new order every epoch). ``None``: nondeterministic.
        limit: keep only the first ``limit`` examples of the split (before shuffling).
        drop_remainder: drop the last batch when it is smaller than ``batch_size``.

    Example:
        >>> ds = load("mnist", "test", batch_size=100, limit=250)
        >>> [int(labels.shape[0]) for _, labels in ds]
        [100, 100, 50]
    """
    spec = _spec(name)
    split = _check_split(split)
    _check_positive_int("batch_size", batch_size)
    if limit is not None:
        _check_positive_int("limit", limit, allow_zero=True)
    train, test = load_arrays(spec.name, data_dir=data_dir)
    images, labels = train if split == "train" else test
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _pipeline(
        images,
        labels,
        batch_size=batch_size,
        shuffle=(split == "train") if shuffle is None else bool(shuffle),
        augment=augment,
        standardize=standardize,
        seed=seed,
        drop_remainder=drop_remainder,
    )


def load_epochs(
    name: str,
    split: str = "train",
    *,
    seed: int,
    first_epoch: int = 0,
    batch_size: int = 128,
    augment: bool = False,
    standardize: bool = True,
    data_dir: PathLike | None = None,
    limit: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """An endless stream of shuffled epochs whose order depends only on ``(seed, epoch)``.

    Returns ``(dataset, steps_per_epoch)``; train with
    ``model.fit(dataset, steps_per_epoch=steps_per_epoch, epochs=...)``.  Epoch ``e`` is a
    stateless permutation (and, with ``augment``, stateless crops and flips) keyed by
    ``(seed, e)``, so a run restarted at ``first_epoch=k`` sees exactly the batches an
    uninterrupted run sees from its ``k``-th epoch on (what ``ssm train --resume`` relies on),
    and every worker of a multi-worker run sees the same global batches.

    Example:
        >>> ds, steps = load_epochs("mnist", seed=1, batch_size=100, limit=250)
        >>> steps, [int(y.shape[0]) for _, y in ds.take(4)]
        (3, [100, 100, 50, 100])
    """
    import tensorflow as tf

    spec = _spec(name)
    split = _check_split(split)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("first_epoch", first_epoch, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    train, test = load_arrays(spec.name, data_dir=data_dir)
    images, labels = train if split == "train" else test
    if limit is not None:
        _check_positive_int("limit", limit)
        images, labels = images[:limit], labels[:limit]
    count = len(labels)
    steps = -(-count // batch_size)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels, dtype=tf.int32)
    seed_t = tf.constant(int(seed), tf.int64)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([seed_t, epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), key)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        steps_t = tf.data.Dataset.range(steps).map(lambda step: tf.stack([epoch, step]) + key)
        return tf.data.Dataset.zip((batches, steps_t))

    def make_batch(index: tf.Tensor, batch_key: tf.Tensor) -> Any:
        pixels = tf.cast(tf.gather(images_t, index), tf.float32)
        features = tf.image.per_image_standardization(pixels) if standardize else pixels / 255.0
        if augment:
            features = _augment_batch(features, batch_key)
        return features, tf.gather(labels_t, index)

    epochs = tf.data.Dataset.range(int(first_epoch), 2**62).flat_map(epoch_batches)
    dataset = epochs.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE), steps


def standardize_images(images: Array, chunk: int = 4096) -> Array:
    """Per-image standardization, vectorized: ``(x - mean) / max(std, 1 / sqrt(N))``.

    Matches ``tf.image.per_image_standardization`` (``N`` = pixels x channels of one image),
    computed in float32 over chunks of images to bound temporary memory.

    Example:
        >>> x = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
        >>> z = standardize_images(x)
        >>> z.dtype.name, bool(np.allclose(z.mean(axis=(1, 2, 3)), 0, atol=1e-6))
        ('float32', True)
    """
    images = np.asarray(images)
    out = np.empty(images.shape, dtype=np.float32)
    if images.size == 0:
        return out
    flat_out = out.reshape(len(images), -1)
    min_std = np.float32(1.0 / math.sqrt(flat_out.shape[1]))
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, flat_out.shape[1]).astype(np.float32)
        block -= block.mean(axis=1, keepdims=True)
        std = np.sqrt(np.mean(np.square(block), axis=1, keepdims=True))
        block /= np.maximum(std, min_std)
        flat_out[start : start + chunk] = block
    return out


# --------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------


def _spec(name: str) -> _Spec:
    """The spec of a dataset; accepts case and ``-`` variants (``"Fashion-MNIST"``)."""
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}.")
    return _SPECS[key]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    return split


def _check_positive_int(what: str, value: int, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}.")


# --------------------------------------------------------------------------------------------
# Locating local files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Source:
    """A local layout that was found: its kind and the files to read (resolved paths)."""

    layout: str  # "idx", "npz", "cifar-py" or "cifar-tar"
    files: tuple[str, ...]


def _find_local(spec: _Spec, data_dir: PathLike | None, searched: list[str]) -> _Source | None:
    """The first local layout found under ``data_dir`` (else the env var), or ``None``."""
    if data_dir is not None:
        root, label = Path(data_dir), "data_dir"
        searched.append(f"${DATA_DIR_ENV}: not consulted because data_dir was given")
    elif os.environ.get(DATA_DIR_ENV):
        root, label = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        searched.append(f"${DATA_DIR_ENV}: not set (and no data_dir given)")
        return None
    root = root.expanduser()
    for folder in _candidate_dirs(spec, root):
        if not folder.is_dir():
            reason = "is not a directory" if folder.exists() else "does not exist"
            searched.append(f"{label}: {folder}: {reason}")
            continue
        found = _find_in_folder(spec, folder)
        if isinstance(found, _Source):
            return found
        searched.append(f"{label}: {folder}: {found}")
    return None


def _candidate_dirs(spec: _Spec, root: Path) -> list[Path]:
    """``root/<alias>`` for each folder alias of the dataset, then ``root`` itself."""
    return [root / folder for folder in spec.folders] + [root]


def _find_in_folder(spec: _Spec, folder: Path) -> _Source | str:
    """A layout found in ``folder``, else a short reason why none was found."""
    finders = (_find_idx,) if spec.family == "idx" else (_find_npz, _find_cifar_py, _find_tar)
    reasons = []
    for finder in finders:
        found = finder(spec, folder)
        if isinstance(found, _Source):
            return found
        reasons.append(found)
    return "; ".join(reasons)


def _find_idx(spec: _Spec, folder: Path) -> _Source | str:
    del spec
    found: list[Path] = []
    missing: list[str] = []
    for base in _IDX_FILES:
        alternatives = [base + ".gz", base, base.replace("-idx", ".idx")]
        match = next((folder / n for n in alternatives if (folder / n).is_file()), None)
        if match is None:
            missing.append(base + "[.gz]")
        else:
            found.append(match)
    if not missing:
        return _Source("idx", tuple(str(p.resolve()) for p in found))
    if found:
        return f"incomplete idx files, missing {', '.join(missing)}"
    return f"no idx files ({', '.join(b + '[.gz]' for b in _IDX_FILES)})"


def _find_npz(spec: _Spec, folder: Path) -> _Source | str:
    del spec
    parts = {}
    for path in folder.glob("train_part*.npz"):
        match = re.fullmatch(r"train_part(\d+)\.npz", path.name)
        if match:
            parts[int(match.group(1))] = path
    train = [parts[i] for i in sorted(parts)]
    if not parts and (folder / "train.npz").is_file():
        train = [folder / "train.npz"]
    test = folder / "test.npz"
    if train and test.is_file():
        gaps = sorted(set(range(1, max(parts) + 1)) - set(parts)) if parts else []
        if gaps:
            return f"incomplete npz parts, missing train_part{gaps[0]}.npz"
        return _Source("npz", tuple(str(p.resolve()) for p in [*train, test]))
    if train or test.is_file():
        return "incomplete npz layout, need train_part1..K.npz (or train.npz) and test.npz"
    return "no npz files (train_part1..K.npz + test.npz)"


def _find_cifar_py(spec: _Spec, folder: Path) -> _Source | str:
    names = [*spec.py_train, spec.py_test]
    for candidate in (folder / spec.py_folder, folder):
        paths = [candidate / n for n in names]
        if all(p.is_file() for p in paths):
            return _Source("cifar-py", tuple(str(p.resolve()) for p in paths))
    return f"no {spec.py_folder}/ folder"


def _find_tar(spec: _Spec, folder: Path) -> _Source | str:
    path = folder / spec.tar_name
    if path.is_file():
        return _Source("cifar-tar", (str(path.resolve()),))
    return f"no {spec.tar_name}"


def _how_to_supply(spec: _Spec) -> str:
    if spec.family == "idx":
        files = ", ".join(b + ".gz" for b in _IDX_FILES) + " (uncompressed idx files also work)"
    else:
        files = (
            f"train_part1..K.npz (x_train, y_train) + test.npz (x_test, y_test), or "
            f"{spec.tar_name}, or its extracted {spec.py_folder}/ folder"
        )
    return (
        f"To supply the data, put the files in <dir>/{spec.folders[0]}/ (or in <dir> itself) and "
        f"pass data_dir=<dir> (scripts: --data-dir <dir>) or set {DATA_DIR_ENV}=<dir>. "
        f"Expected files: {files}."
    )


# --------------------------------------------------------------------------------------------
# Reading local files (cached)
# --------------------------------------------------------------------------------------------


def _read_source(spec: _Spec, source: _Source) -> Arrays:
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, source.files))
    return _read_cached(spec.name, source, stamps)


@functools.lru_cache(maxsize=8)
def _read_cached(name: str, source: _Source, stamps: tuple[tuple[int, int], ...]) -> Arrays:
    """Parse a source once per (dataset, resolved files, sizes and mtimes)."""
    del stamps  # part of the cache key only
    spec = _SPECS[name]
    reader = _READERS[source.layout]
    train, test = reader(spec, source.files)
    train_files, test_files = _split_files(source)
    return _finish(spec, train, train_files), _finish(spec, test, test_files)


def _split_files(source: _Source) -> tuple[str, str]:
    """The files holding the train and the test split, for error messages."""
    files = source.files
    if source.layout == "idx":
        train, test = files[:2], files[2:]
    elif len(files) == 1:
        train = test = files
    else:
        train, test = files[:-1], files[-1:]
    return " + ".join(train), " + ".join(test)


def _finish(spec: _Spec, split: Split, where: str) -> Split:
    """Validate images against labels and the spec; make arrays read-only."""
    images, labels = split
    if images.shape[1:] != spec.input_shape or images.dtype != np.uint8:
        raise DataFormatError(
            f"{where}: images have shape {images.shape} and dtype {images.dtype}, "
            f"expected (N, {', '.join(map(str, spec.input_shape))}) uint8"
        )
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise DataFormatError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFormatError(
            f"{where}: labels must lie in [0, {spec.num_classes}), "
            f"found [{labels.min()}, {labels.max()}]"
        )
    labels = labels.astype(np.int32)
    for array in (images, labels):
        array.flags.writeable = False
    return images, labels


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn low-level read errors into a :class:`DataFormatError` naming ``path``."""
    try:
        yield
    except DataFormatError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,  # e.g. a declared size beyond what the platform can address
        NotImplementedError,  # zipfile: an unsupported compression method or flag
        RuntimeError,  # zipfile: an encrypted member
        struct.error,
        lzma.LZMAError,
        zlib.error,
        zipfile.BadZipFile,
        tarfile.TarError,
        pickle.UnpicklingError,
    ) as exc:
        raise DataFormatError(
            f"{path}: unreadable or corrupt file ({type(exc).__name__}: {exc})"
        ) from exc


# -- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def _read_idx_source(spec: _Spec, files: tuple[str, ...]) -> Arrays:
    train_x, train_y, test_x, test_y = files
    item = spec.input_shape[:2]
    return (
        (_read_idx(train_x, item)[..., None], _read_idx(train_y, ())),
        (_read_idx(test_x, item)[..., None], _read_idx(test_y, ())),
    )


def _read_idx(path: str, item_shape: tuple[int, ...]) -> Array:
    """Read an unsigned-byte idx file whose items have ``item_shape`` (``()`` for labels)."""
    ndim = 1 + len(item_shape)
    magic = 0x0800 + ndim
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    with _reading(path), opener(path, "rb") as stream:
        header = stream.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise DataFormatError(f"{path}: truncated idx header ({len(header)} bytes)")
        found = int.from_bytes(header[:4], "big")
        if found != magic:
            raise DataFormatError(
                f"{path}: bad idx magic number {found:#010x} (expected {magic:#010x}, "
                f"an unsigned-byte idx file with {ndim} dimension(s))"
            )
        dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        _check_idx_dims(path, dims, item_shape)
        nbytes = math.prod(dims)
        if not path.endswith(".gz"):
            _check_file_size(path, len(header) + nbytes)
        payload = stream.read(nbytes + 1)
    if len(payload) != nbytes:
        problem = "truncated" if len(payload) < nbytes else "longer than its header declares"
        raise DataFormatError(f"{path}: {problem} (header declares {nbytes} data bytes)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _check_idx_dims(path: str, dims: tuple[int, ...], item_shape: tuple[int, ...]) -> None:
    if dims[1:] != item_shape:
        raise DataFormatError(
            f"{path}: idx header declares items of shape {dims[1:]}, expected {item_shape}"
        )
    if dims[0] > _MAX_EXAMPLES:
        raise DataFormatError(f"{path}: idx header declares an implausible {dims[0]} items")


def _check_file_size(path: str, expected: int) -> None:
    actual = os.path.getsize(path)
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header declares"
        raise DataFormatError(f"{path}: {problem} ({actual} bytes, header implies {expected})")


# -- npz (CIFAR parts) ------------------------------------------------------------------------


def _read_npz_source(spec: _Spec, files: tuple[str, ...]) -> Arrays:
    *train_files, test_file = files
    parts = [_read_npz_split(spec, path, "train") for path in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _read_npz_split(spec, test_file, "test")


def _read_npz_split(spec: _Spec, path: str, split: str) -> Split:
    with _reading(path), zipfile.ZipFile(path) as archive:
        images = _read_npy_member(archive, path, f"x_{split}", spec.input_shape, images=True)
        labels = _read_npy_member(archive, path, f"y_{split}", None, images=False)
    return images, labels


def _read_npy_member(
    archive: zipfile.ZipFile,
    path: str,
    key: str,
    item_shape: tuple[int, ...] | None,
    *,
    images: bool,
) -> Array:
    """Read one array of an npz without pickle, validating its header before allocating."""
    try:
        member = archive.getinfo(key + ".npy")
    except KeyError:
        keys = sorted(n.removesuffix(".npy") for n in archive.namelist())
        raise DataFormatError(f"{path}: no array {key!r} (found {keys})") from None
    with archive.open(member) as stream:
        shape, fortran, dtype = _read_npy_header(stream, path, key)
        _check_npy_header(path, key, shape, dtype, item_shape, images=images)
        nbytes = math.prod(shape) * dtype.itemsize
        payload = stream.read(nbytes + 1)
    if len(payload) != nbytes:
        raise DataFormatError(f"{path}: {key} has {len(payload)} data bytes, expected {nbytes}")
    array = np.frombuffer(payload, dtype=dtype)
    order = "F" if fortran else "C"
    return np.ascontiguousarray(array.reshape(shape, order=order))


def _read_npy_header(stream: Any, path: str, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an .npy stream; any parse failure of the header
    (numpy tokenizes and literal-evals its text) is a :class:`DataFormatError`."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise DataFormatError(f"{path}: {key}: unsupported .npy format version {version}")
        return read_header(stream)
    except DataFormatError:
        raise
    except Exception as exc:  # ValueError, tokenize.TokenError, RecursionError, ...
        raise DataFormatError(
            f"{path}: {key}: corrupt .npy header ({type(exc).__name__}: {exc})"
        ) from exc


def _check_npy_header(
    path: str,
    key: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    item_shape: tuple[int, ...] | None,
    *,
    images: bool,
) -> None:
    if images and (dtype != np.uint8 or tuple(shape[1:]) != item_shape):
        raise DataFormatError(f"{path}: {key} is {dtype} {shape}, expected uint8 (N, {item_shape})")
    if not images and (dtype.kind not in "iu" or len(shape) not in (1, 2)):
        raise DataFormatError(f"{path}: {key} is {dtype} {shape}, expected integer labels (N,)")
    if not shape or shape[0] > _MAX_EXAMPLES:
        raise DataFormatError(f"{path}: {key} has an implausible shape {shape}")


# -- CIFAR python pickles (tarball or extracted folder) ---------------------------------------


def _read_cifar_py_source(spec: _Spec, files: tuple[str, ...]) -> Arrays:
    blobs, where = {}, {}
    for path in files:
        name = Path(path).name
        with _reading(path), open(path, "rb") as stream:
            blobs[name] = stream.read()
        where[name] = path
    return _cifar_from_blobs(spec, blobs, where)


def _read_cifar_tar_source(spec: _Spec, files: tuple[str, ...]) -> Arrays:
    (path,) = files
    wanted = {*spec.py_train, spec.py_test}
    blobs: dict[str, bytes] = {}
    with _reading(path), tarfile.open(path, mode="r|*") as archive:
        for member in archive:  # streaming: one pass over the compressed file
            base = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or base not in wanted or base in blobs:
                continue
            if member.size > _MAX_MEMBER_BYTES:
                raise DataFormatError(f"{path}: member {member.name} is implausibly large")
            extracted = archive.extractfile(member)
            blobs[base] = extracted.read() if extracted is not None else b""
    missing = sorted(wanted - set(blobs))
    if missing:
        raise DataFormatError(f"{path}: archive lacks {', '.join(missing)}")
    return _cifar_from_blobs(spec, blobs, where={n: f"{path}!{n}" for n in blobs})


def _cifar_from_blobs(spec: _Spec, blobs: dict[str, bytes], where: dict[str, str]) -> Arrays:
    parts = [_parse_cifar_batch(spec, blobs[n], where[n]) for n in spec.py_train]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _parse_cifar_batch(spec, blobs[spec.py_test], where[spec.py_test])


def _parse_cifar_batch(spec: _Spec, blob: bytes, where: str) -> Split:
    """Decode one pickled CIFAR batch (dict with ``data`` (N, 3072) and a label list)."""
    with _reading(where):
        _check_pickle_opcodes(blob, where)
        try:
            raw = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
        except Exception as exc:  # the restricted unpickler runs no code: any failure is damage
            raise DataFormatError(f"{where}: corrupt pickle ({type(exc).__name__}: {exc})") from exc
        if not isinstance(raw, dict):
            raise DataFormatError(f"{where}: expected a pickled dict, got {type(raw).__name__}")
        batch = {_text(k): v for k, v in raw.items()}
        if "data" not in batch or spec.label_key not in batch:
            raise DataFormatError(
                f"{where}: expected keys 'data' and {spec.label_key!r}, found {sorted(batch)}"
            )
        data = _stub_to_array(batch["data"], where)
        labels = _label_list(batch[spec.label_key], where, spec.label_key)
    height, width, channels = spec.input_shape
    if data.ndim != 2 or data.shape[1] != height * width * channels:
        raise DataFormatError(f"{where}: data has shape {data.shape}, expected (N, 3072)")
    images = data.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _check_pickle_opcodes(blob: bytes, where: str) -> None:
    """Walk the pickle's opcodes without building anything, before unpickling it.

    The C unpickler allocates what a length field or memo index declares before it reads: a
    few edited bytes could ask for gigabytes. ``pickletools.genops`` checks every declared
    length against the bytes that remain; memo indices must not exceed the opcode count.
    """
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(blob)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
                raise DataFormatError(f"{where}: corrupt pickle (memo index {arg} at op {count})")
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(f"{where}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def _label_list(value: object, where: str, key: str) -> Array:
    """Labels as the CIFAR python batches hold them: a flat list of ints."""
    if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
        raise DataFormatError(f"{where}: {key!r} must be a list of integers")
    if value and not (-(2**63) <= min(value) and max(value) < 2**63):
        raise DataFormatError(f"{where}: {key!r} holds an out-of-range label")
    return np.asarray(value, dtype=np.int64)


def _text(value: object) -> object:
    return value.decode("latin1") if isinstance(value, bytes) else value


class _ArrayStub:
    """Inert stand-in for a pickled numpy array; only records the pickled state."""

    def __init__(self, *args: object) -> None:
        self.args = args
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _DtypeStub(_ArrayStub):
    """Inert stand-in for a pickled numpy dtype."""


def _reconstruct_stub(*args: object) -> _ArrayStub:
    return _ArrayStub(*args)


def _frombuffer_stub(buffer: object, dtype: object, shape: object, order: object) -> _ArrayStub:
    stub = _ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _codecs_encode_stub(text: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(text, str) or _text(encoding) not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stub,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stub,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer_stub,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer_stub,
    ("numpy", "ndarray"): _ArrayStub,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _codecs_encode_stub,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only to the inert stand-ins of ``_PICKLE_GLOBALS``.

    Plain containers (dict, list, tuple, str, bytes, int, ...) are built by pickle opcodes
    without any global; everything else is refused, so no code from the file can run.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _stub_to_array(stub: object, where: str) -> Array:
    """Build a uint8 array from a recorded ndarray pickle state, checking sizes first."""
    state = getattr(stub, "state", None)
    if not isinstance(stub, _ArrayStub) or not isinstance(state, tuple) or len(state) != 5:
        raise DataFormatError(f"{where}: 'data' is not a pickled numpy array")
    _, shape, dtype, fortran, payload = state
    descr = _text(dtype.args[0]) if isinstance(dtype, _DtypeStub) and dtype.args else None
    if descr not in ("u1", "|u1", "uint8"):
        raise DataFormatError(f"{where}: 'data' has dtype {descr!r}, expected uint8")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataFormatError(f"{where}: 'data' has an invalid shape {shape!r}")
    if isinstance(payload, str):
        payload = payload.encode("latin1")
    if not isinstance(payload, bytes | bytearray) or len(payload) != math.prod(shape):
        raise DataFormatError(f"{where}: 'data' payload does not match its shape {shape}")
    order = "F" if fortran else "C"
    return np.frombuffer(bytes(payload), dtype=np.uint8).reshape(shape, order=order)


_READERS: dict[str, Callable[[_Spec, tuple[str, ...]], Arrays]] = {
    "idx": _read_idx_source,
    "npz": _read_npz_source,
    "cifar-py": _read_cifar_py_source,
    "cifar-tar": _read_cifar_tar_source,
}


# --------------------------------------------------------------------------------------------
# tensorflow-datasets fallback
# --------------------------------------------------------------------------------------------


def _load_from_tfds(spec: _Spec, searched: list[str]) -> Arrays | None:
    """Arrays from tfds (prepared data first, then a download when online), else ``None``."""
    try:
        import tensorflow_datasets as tfds  # slow import: only when needed
    except ImportError as exc:
        searched.append(f"tensorflow-datasets: not importable ({exc})")
        return None
    tfds_dir = os.environ.get("TFDS_DATA_DIR") or str(tfds.core.constants.DATA_DIR)
    try:
        return _tfds_arrays(tfds, spec, tfds_dir, download=False)
    except Exception as exc:  # tfds raises AssertionError and others when data is missing
        searched.append(
            f"tensorflow-datasets {spec.tfds_name!r} in {tfds_dir}: not prepared "
            f"({_first_line(exc)})"
        )
    online, why = _network_available()
    if not online:
        searched.append(f"tensorflow-datasets download: skipped ({why})")
        return None
    try:
        return _tfds_arrays(tfds, spec, tfds_dir, download=True)
    except Exception as exc:  # any download/prepare failure is reported, not raised
        searched.append(
            f"tensorflow-datasets download into {tfds_dir}: failed ({_first_line(exc)})"
        )
        return None


def _tfds_arrays(tfds: Any, spec: _Spec, data_dir: str, *, download: bool) -> Arrays:
    datasets = tfds.load(
        spec.tfds_name,
        split=list(SPLITS),
        data_dir=data_dir,
        download=download,
        as_supervised=True,
    )
    where = f"tfds:{spec.tfds_name}"
    return tuple(  # type: ignore[return-value]
        _finish(spec, _dataset_to_numpy(ds), f"{where}[{split}]")
        for ds, split in zip(datasets, SPLITS, strict=True)
    )


def _dataset_to_numpy(dataset: tf.data.Dataset) -> Split:
    # Batches of a fixed size: tfds' batch_size=-1 aborts the process on some mocked datasets.
    images, labels = [], []
    for x, y in dataset.batch(8192).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError("empty split")
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels)


def _network_available(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether a download can be tried, with the reason; never blocks longer than ``timeout``."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False, f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    start = time.monotonic()
    host, port = PROBE_HOST
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} reachable"
    except OSError as exc:
        took = time.monotonic() - start
        return False, f"offline: {host}:{port} unreachable after {took:.2f} s ({exc})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------------------------
# tf.data pipeline
# --------------------------------------------------------------------------------------------


def _pipeline(
    images: Array,
    labels: Array,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    standardize: bool,
    seed: int | None,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """Batches gathered from in-memory uint8 images by (shuffled) index.

    Shuffling indices instead of examples keeps the shuffle buffer tiny, and converting each
    batch to float32 on the fly keeps memory at the uint8 size (CIFAR-10: 150 MB, not 600 MB);
    the standardization equals :func:`standardize_images` to float32 rounding.
    """
    import tensorflow as tf

    images_t = tf.constant(images)
    labels_t = tf.constant(labels, dtype=tf.int32)
    indices = tf.data.Dataset.range(len(labels))
    if shuffle:
        indices = indices.shuffle(max(len(labels), 1), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size, drop_remainder=drop_remainder)

    def make_batch(index: tf.Tensor, batch_seed: tf.Tensor | None = None) -> Any:
        pixels = tf.cast(tf.gather(images_t, index), tf.float32)
        features = tf.image.per_image_standardization(pixels) if standardize else pixels / 255.0
        if batch_seed is not None:
            features = _augment_batch(features, batch_seed)
        return features, tf.gather(labels_t, index)

    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        batches = tf.data.Dataset.zip((batches, seeds))
    dataset = batches.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _augment_batch(images: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """Per-image random pad-``pad`` crop and horizontal flip, from one stateless seed."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    count = tf.shape(images)[0]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [count, 2], seed=crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([count, 1, 1, 1], seed=flip_seed) < 0.5
    return tf.where(flip, tf.reverse(cropped, axis=[2]), cropped)
