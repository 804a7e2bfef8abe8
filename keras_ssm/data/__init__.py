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

Safety: the CIFAR python batches are pickles. They are read by
:mod:`keras_ssm.data.safe_pickle`, which hands out only inert stand-ins for the few globals
these files use (numpy's array/dtype reconstructors and ``_codecs.encode``). No callable named
by the file is ever imported or called, so a malicious pickle cannot execute code; it is
rejected with a :class:`DataFormatError`. Declared sizes (idx headers, npy headers, tar
members) are checked before memory is allocated.

The package: :mod:`~keras_ssm.data.specs` (the dataset table), :mod:`~keras_ssm.data.locate`
(finding files), :mod:`~keras_ssm.data.formats` (idx, npz and CIFAR readers),
:mod:`~keras_ssm.data.safe_pickle`, :mod:`~keras_ssm.data.tfds` (the fallback),
:mod:`~keras_ssm.data.pipeline` (the tf.data builder) and
:mod:`~keras_ssm.data.numpy_batches` (the same batches without TensorFlow: a
``keras.utils.PyDataset``); this module is the public API.

Example (with ``KERAS_SSM_DATA_DIR`` pointing at a folder that holds ``mnist/``):

>>> from keras_ssm import data
>>> ds = data.load("mnist", batch_size=64, limit=256, seed=0)
>>> images, labels = next(iter(ds))
>>> tuple(images.shape), images.dtype.name, labels.dtype.name
((64, 28, 28, 1), 'float32', 'int32')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keras_ssm.data import formats, pipeline, tfds
from keras_ssm.data.errors import DataFormatError, DataNotFoundError

# ``NAME as NAME``: constants kept importable from keras_ssm.data, as before it became a
# package. PROBE_HOST and PROBE_TIMEOUT_S are read in keras_ssm.data.tfds: patch them there.
from keras_ssm.data.locate import DATA_DIR_ENV as DATA_DIR_ENV
from keras_ssm.data.locate import find_local, how_to_supply
from keras_ssm.data.numpy_batches import NumpyBatches as NumpyBatches
from keras_ssm.data.numpy_batches import standardize_images as standardize_images
from keras_ssm.data.specs import DATASETS, Arrays, PathLike, Split, check_split, spec_for
from keras_ssm.data.specs import SPLITS as SPLITS
from keras_ssm.data.tfds import OFFLINE_ENV as OFFLINE_ENV
from keras_ssm.data.tfds import PROBE_HOST as PROBE_HOST
from keras_ssm.data.tfds import PROBE_TIMEOUT_S as PROBE_TIMEOUT_S

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "NumpyBatches",
    "info",
    "load",
    "load_arrays",
    "load_epochs",
    "standardize_images",
]


def info(name: str) -> dict[str, Any]:
    """Static facts about a dataset (canonical sizes, not the sizes of local files).

    Example:
        >>> facts = info("cifar10")
        >>> facts["input_shape"], facts["num_classes"], facts["train_size"], facts["test_size"]
        ((32, 32, 3), 10, 50000, 10000)
    """
    spec = spec_for(name)
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
    spec = spec_for(name)
    searched: list[str] = []
    source = find_local(spec, data_dir, searched)
    if source is not None:
        return formats.read_source(spec, source)
    arrays = tfds.load_from_tfds(spec, searched)
    if arrays is not None:
        return arrays
    raise DataNotFoundError(spec.name, searched, how_to_supply(spec))


def _checked_split(
    name: str,
    split: str,
    data_dir: PathLike | None,
    batch_size: int,
    limit: int | None,
    *,
    epoch_keyed: bool = False,
    first_epoch: int = 0,
    seed: int | None = None,
) -> Split:
    """The first ``limit`` examples of a split, with every argument checked before any file
    is read (``first_epoch`` and ``seed`` only for the ``epoch_keyed`` stream)."""
    spec = spec_for(name)
    split = check_split(split)
    pipeline.check_int("batch_size", batch_size, low=1)
    if epoch_keyed:
        pipeline.check_int("first_epoch", first_epoch, low=0)
        pipeline.check_seed(seed)
    pipeline.check_limit(limit)
    train, test = load_arrays(spec.name, data_dir=data_dir)
    return pipeline.head(train if split == "train" else test, limit)


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
) -> tf.data.Dataset | NumpyBatches:
    """A batched, prefetched ``tf.data.Dataset`` of ``(image float32 NHWC, label int32)``;
    where TensorFlow is not installed, a :class:`NumpyBatches` (``keras.utils.PyDataset``) of
    the same batches, which ``model.fit`` takes alike (its shuffles and crops come from
    ``numpy`` generators: with the same seed, not the ``tf.data`` order).

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        batch_size: examples per batch.
        shuffle: shuffle the whole split, differently each epoch; defaults to ``True`` for
            ``"train"`` and ``False`` otherwise.  The dataset shuffles itself, so pass
            ``shuffle=False`` to ``model.fit`` (Keras warns that its own ``shuffle=True``
            default is ignored for any ``tf.data.Dataset``).
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
        limit: keep only the first ``limit`` examples of the split (before shuffling): an
            integer ``>= 1``, or ``None`` for the whole split (``0`` is a ``ValueError``,
            as in :func:`load_epochs`).
        drop_remainder: drop the last batch when it is smaller than ``batch_size``.

    Raises:
        ValueError: unknown ``name`` or ``split``, or a bad ``batch_size`` or ``limit``.
        DataNotFoundError, DataFormatError: as :func:`load_arrays`.

    Example:
        >>> ds = load("mnist", "test", batch_size=100, limit=250)
        >>> [int(labels.shape[0]) for _, labels in ds]
        [100, 100, 50]
    """
    images, labels = _checked_split(name, split, data_dir, batch_size, limit)
    return pipeline.build(
        images,
        labels,
        batch_size=batch_size,
        standardize=standardize,
        augment=augment,
        seed=seed,
        shuffle=(split == "train") if shuffle is None else bool(shuffle),
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
) -> tuple[tf.data.Dataset | NumpyBatches, int]:
    """An endless stream of shuffled epochs whose order depends only on ``(seed, epoch)``.

    Returns ``(dataset, steps_per_epoch)``; train with
    ``model.fit(dataset, steps_per_epoch=steps_per_epoch, epochs=...)``.  Epoch ``e`` is a
    stateless permutation (and, with ``augment``, stateless crops and flips) keyed by
    ``(seed, e)``, so a run restarted at ``first_epoch=k`` sees exactly the batches an
    uninterrupted run sees from its ``k``-th epoch on (what ``ssm train --resume`` relies on),
    and every worker of a multi-worker run sees the same global batches.

    Arguments as :func:`load` (``limit``: an integer ``>= 1`` or ``None``); ``seed`` is a
    required integer and ``first_epoch`` an integer ``>= 0``.  Without TensorFlow the stream
    is an endless :class:`NumpyBatches`, keyed the same way.

    Example:
        >>> ds, steps = load_epochs("mnist", seed=1, batch_size=100, limit=250)
        >>> steps, [int(y.shape[0]) for _, y in ds.take(4)]
        (3, [100, 100, 50, 100])
    """
    images, labels = _checked_split(
        name,
        split,
        data_dir,
        batch_size,
        limit,
        epoch_keyed=True,
        first_epoch=first_epoch,
        seed=seed,
    )
    dataset = pipeline.build(
        images,
        labels,
        batch_size=batch_size,
        standardize=standardize,
        augment=augment,
        seed=int(seed),
        first_epoch=int(first_epoch),
    )
    return dataset, pipeline.steps_per_epoch(len(labels), batch_size)
