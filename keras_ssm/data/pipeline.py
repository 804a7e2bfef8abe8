"""The one tf.data builder behind :func:`~keras_ssm.data.load` and
:func:`~keras_ssm.data.load_epochs`, and the argument checks they share.  Where TensorFlow
cannot be imported (a JAX or PyTorch machine), :func:`build` gives the same batches from a
:class:`~keras_ssm.data.numpy_batches.NumpyBatches` instead.

Batches are gathered from the in-memory uint8 images by (shuffled) index: shuffling indices
instead of examples keeps the shuffle buffer tiny, and converting each batch to float32 on the
fly keeps memory at the uint8 size (CIFAR-10: 150 MB, not 600 MB). The standardization equals
:func:`~keras_ssm.data.standardize_images` to float32 rounding.

Two index orders share everything else (gather, standardize, augment, map, prefetch):

* one pass per iteration (``first_epoch=None``, for :func:`~keras_ssm.data.load`): in order,
  or shuffled by ``tf.data`` with ``seed``, differently on each iteration;
* an endless epoch-keyed stream (``first_epoch=k``, for
  :func:`~keras_ssm.data.load_epochs`): epoch ``e`` is a stateless permutation (and stateless
  crops and flips) keyed by ``(seed, e)`` alone, so a stream started at epoch ``k`` equals an
  uninterrupted one from its ``k``-th epoch on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from keras_ssm.data.numpy_batches import NumpyBatches, check_stream, steps_per_epoch
from keras_ssm.data.specs import Array, Split

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "augment_batch",
    "build",
    "check_int",
    "check_limit",
    "check_seed",
    "head",
    "steps_per_epoch",
    "tensorflow_available",
]


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (the ``tf.data`` pipeline needs it)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def check_int(what: str, value: int, *, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) ``>= low``.

    Example:
        >>> check_int("batch_size", 0, low=1)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an integer >= 1, got 0.
    """
    if not _is_int(value) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}.")


def check_limit(limit: int | None) -> None:
    """The one check of ``limit``, shared by ``load`` and ``load_epochs``: ``None`` (the whole
    split) or an integer ``>= 1``. ``0`` is refused: it would make an empty dataset, which
    trains nothing and (in the endless epoch stream) has no batch to yield.

    Example:
        >>> check_limit(0)
        Traceback (most recent call last):
        ...
        ValueError: limit must be None (the whole split) or an integer >= 1, got 0.
    """
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ValueError(f"limit must be None (the whole split) or an integer >= 1, got {limit!r}.")


def check_seed(seed: object) -> None:
    """Raise ``ValueError`` unless ``seed`` is an integer (not a bool)."""
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}.")


def head(split: Split, limit: int | None) -> Split:
    """The first ``limit`` examples of ``split`` (all of it for ``None``); see :func:`check_limit`.

    Example:
        >>> images, labels = head((np.zeros((5, 2, 2, 1), np.uint8), np.arange(5)), 3)
        >>> images.shape, labels.tolist()
        ((3, 2, 2, 1), [0, 1, 2])
    """
    check_limit(limit)
    images, labels = split
    if limit is None:
        return images, labels
    return images[:limit], labels[:limit]


def build(
    images: Array,
    labels: Array,
    *,
    batch_size: int,
    standardize: bool,
    augment: bool,
    seed: int | None,
    shuffle: bool = False,
    drop_remainder: bool = False,
    first_epoch: int | None = None,
) -> tf.data.Dataset | NumpyBatches:
    """A prefetched ``tf.data.Dataset`` of ``(float32 NHWC images, int32 labels)`` batches;
    without TensorFlow, a :class:`~keras_ssm.data.numpy_batches.NumpyBatches` of the same
    batches (its own random streams).

    Args:
        images: uint8 NHWC images (already limited, see :func:`head`).
        labels: integer labels, one per image.
        batch_size: examples per batch.
        standardize: per-image standardization; else pixels scaled to ``[0, 1]``.
        augment: pad-4 random crop and left-right flip per image (:func:`augment_batch`).
        seed: shuffling and augmentation seed; ``None`` (one-pass order only):
            nondeterministic. Required for the epoch-keyed stream.
        shuffle: one-pass order only: shuffle the split anew on each iteration.
        drop_remainder: one-pass order only: drop a last batch smaller than ``batch_size``.
        first_epoch: ``None`` for one pass per iteration; an epoch number for the endless
            epoch-keyed stream starting at that epoch (always shuffled, never drops).
    """
    if not tensorflow_available():
        return NumpyBatches(
            images,
            labels,
            batch_size=batch_size,
            standardize=standardize,
            augment=augment,
            seed=seed,
            shuffle=shuffle,
            drop_remainder=drop_remainder,
            first_epoch=first_epoch,
        )
    import tensorflow as tf

    images_t = tf.constant(images)
    labels_t = tf.constant(labels, dtype=tf.int32)
    if first_epoch is None:
        batches = _one_pass_batches(
            len(labels), batch_size, shuffle, seed, drop_remainder, with_keys=augment
        )
    else:
        check_stream(seed, shuffle, drop_remainder)
        batches = _epoch_keyed_batches(len(labels), batch_size, seed, first_epoch)

    def make_batch(index: tf.Tensor, batch_key: tf.Tensor | None = None) -> Any:
        pixels = tf.cast(tf.gather(images_t, index), tf.float32)
        features = tf.image.per_image_standardization(pixels) if standardize else pixels / 255.0
        if augment and batch_key is not None:
            features = augment_batch(features, batch_key)
        return features, tf.gather(labels_t, index)

    dataset = batches.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _one_pass_batches(
    count: int,
    batch_size: int,
    shuffle: bool,
    seed: int | None,
    drop_remainder: bool,
    *,
    with_keys: bool,
) -> tf.data.Dataset:
    """Index batches of one pass (reshuffled per iteration), zipped with fresh random
    stateless keys per batch when ``with_keys``."""
    import tensorflow as tf

    indices = tf.data.Dataset.range(count)
    if shuffle:
        indices = indices.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size, drop_remainder=drop_remainder)
    if not with_keys:
        return batches
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((batches, keys))


def _epoch_keyed_batches(
    count: int, batch_size: int, seed: int, first_epoch: int
) -> tf.data.Dataset:
    """Endless ``(index batch, key)`` pairs; epoch ``e``, step ``s`` depend on ``(seed, e, s)``."""
    import tensorflow as tf

    steps = steps_per_epoch(count, batch_size)
    seed_t = tf.constant(int(seed), tf.int64)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([seed_t, epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), key)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        step_keys = tf.data.Dataset.range(steps).map(lambda step: tf.stack([epoch, step]) + key)
        return tf.data.Dataset.zip((batches, step_keys))

    return tf.data.Dataset.range(int(first_epoch), 2**62).flat_map(epoch_batches)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
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
