"""Batches without TensorFlow: a ``keras.utils.PyDataset`` over the in-memory uint8 images, for
a machine that has Keras with JAX (or PyTorch) but no TensorFlow.

:func:`~keras_ssm.data.load` and :func:`~keras_ssm.data.load_epochs` build a ``tf.data``
pipeline when TensorFlow can be imported and a :class:`NumpyBatches` otherwise.  Both give the
same kind of batches (float32 NHWC images, standardized per image, and int32 labels), trained
through ``model.fit`` alike; the two differ only in their random streams:

* one pass per iteration (``first_epoch=None``): in order, or shuffled anew on every iteration
  and every ``fit`` epoch from a ``numpy`` generator seeded with ``seed``;
* the endless epoch-keyed stream (``first_epoch=k``): epoch ``e`` is the permutation (and, with
  ``augment``, the crops and flips) of ``numpy.random.default_rng((seed, e[, step]))``, so a
  stream started at epoch ``k`` equals an uninterrupted one from its ``k``-th epoch on, as the
  ``tf.data`` stream does (``ssm train --resume``).

With the same seed the numpy stream is not the ``tf.data`` stream (different generators).

>>> import numpy as np
>>> images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
>>> ds = NumpyBatches(images, np.arange(5), batch_size=2, standardize=False)
>>> len(ds), [y.tolist() for _, y in ds]
(3, [[0, 1], [2, 3], [4]])
>>> stream = NumpyBatches(images, np.arange(5), batch_size=2, seed=1, first_epoch=3)
>>> stream.num_batches is None, stream.steps_per_epoch, stream[0][0].dtype.name
(True, 3, 'float32')
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from keras_ssm.data.specs import Array

__all__ = [
    "NumpyBatches",
    "augment_images",
    "check_stream",
    "standardize_images",
    "steps_per_epoch",
]


def check_stream(seed: int | None, shuffle: bool, drop_remainder: bool) -> None:
    """The epoch-keyed stream's arguments, for both batch builders: it needs a seed, always
    shuffles (by ``(seed, epoch)``) and never drops a batch."""
    if seed is None or shuffle or drop_remainder:
        raise ValueError("the epoch-keyed stream needs a seed, always shuffles, never drops")


def steps_per_epoch(count: int, batch_size: int, *, drop_remainder: bool = False) -> int:
    """Batches in one pass over ``count`` examples.

    Example:
        >>> steps_per_epoch(250, 100), steps_per_epoch(250, 100, drop_remainder=True)
        (3, 2)
    """
    return count // batch_size if drop_remainder else -(-count // batch_size)


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


def augment_images(images: Array, rng: np.random.Generator, pad: int = 4) -> Array:
    """Per-image random pad-``pad`` crop (zero padding) and horizontal flip, drawn from ``rng``.

    Example:
        >>> x = np.ones((3, 8, 8, 1), np.float32)
        >>> y = augment_images(x, np.random.default_rng(0))
        >>> y.shape, bool(((y == 0) | (y == 1)).all())
        ((3, 8, 8, 1), True)
    """
    count, height, width = images.shape[:3]
    padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    offsets = rng.integers(0, 2 * pad + 1, size=(count, 2))
    flips = rng.random(count) < 0.5
    out = np.empty_like(images)
    for i, ((row, col), flip) in enumerate(zip(offsets, flips, strict=True)):
        crop = padded[i, row : row + height, col : col + width]
        out[i] = crop[:, ::-1] if flip else crop
    return out


class NumpyBatches(keras.utils.PyDataset):
    """``(float32 NHWC images, int32 labels)`` batches gathered from uint8 images by index.

    Args:
        images: uint8 NHWC images (already limited).
        labels: integer labels, one per image.
        batch_size: examples per batch.
        standardize: per-image standardization (:func:`standardize_images`); else pixels
            scaled to ``[0, 1]``.
        augment: pad-4 random crop and left-right flip per image (:func:`augment_images`).
        seed: the random streams' seed; ``None`` (one pass only): nondeterministic.  Required
            for the epoch-keyed stream.
        shuffle: one pass only: a new order on every iteration and every ``fit`` epoch.
        drop_remainder: one pass only: drop a last batch smaller than ``batch_size``.
        first_epoch: ``None`` for one pass per iteration (``len`` batches); an epoch number
            for the endless epoch-keyed stream starting there (``num_batches`` is ``None``:
            train with ``steps_per_epoch=`` :attr:`steps_per_epoch`).
    """

    def __init__(
        self,
        images: Array,
        labels: Array,
        *,
        batch_size: int,
        standardize: bool = True,
        augment: bool = False,
        seed: int | None = None,
        shuffle: bool = False,
        drop_remainder: bool = False,
        first_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if first_epoch is not None:
            check_stream(seed, shuffle, drop_remainder)
        self.images = np.asarray(images)
        self.labels = np.asarray(labels).astype(np.int32)
        self.batch_size = int(batch_size)
        self.standardize = standardize
        self.augment = augment
        self.seed = seed
        self.shuffle = shuffle
        self.first_epoch = first_epoch
        self.steps_per_epoch = steps_per_epoch(
            len(self.labels), self.batch_size, drop_remainder=drop_remainder
        )
        self._rng = np.random.default_rng(seed)
        self._order = self._new_order()
        self._keyed_order: tuple[int, Array] | None = None  # (epoch, its permutation)

    # ------------------------------------------------------------------ PyDataset protocol
    @property
    def num_batches(self) -> int | None:
        return None if self.first_epoch is not None else self.steps_per_epoch

    def __len__(self) -> int:
        if self.first_epoch is not None:
            raise TypeError("the epoch-keyed stream is endless: see steps_per_epoch")
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> tuple[Array, Array]:
        if self.first_epoch is None:
            if not 0 <= index < self.steps_per_epoch:
                raise IndexError(f"batch {index} of {self.steps_per_epoch}")
            rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            rng = self._rng
        else:  # stateless: batch ``index`` of the stream depends on (seed, epoch, step) only
            epoch = self.first_epoch + index // self.steps_per_epoch
            step = index % self.steps_per_epoch
            rows = self._epoch_order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
            rng = np.random.default_rng((self.seed, epoch, step))
        pixels = self.images[rows]
        features = (
            standardize_images(pixels)
            if self.standardize
            else pixels.astype(np.float32) / np.float32(255.0)
        )
        if self.augment:
            features = augment_images(features, rng)
        return features, self.labels[rows]

    def __iter__(self) -> Any:
        if self.first_epoch is None:
            self._order = self._new_order()  # as tf.data reshuffles on every iteration
        return super().__iter__()

    def on_epoch_end(self) -> None:
        if self.first_epoch is None:
            self._order = self._new_order()

    def _epoch_order(self, epoch: int) -> Array:
        """Epoch ``epoch``'s permutation, drawn once per epoch (not once per batch)."""
        if self._keyed_order is None or self._keyed_order[0] != epoch:
            order = np.random.default_rng((self.seed, epoch)).permutation(len(self.labels))
            self._keyed_order = (epoch, order)
        return self._keyed_order[1]

    def _new_order(self) -> Array:
        count = len(self.labels)
        return self._rng.permutation(count) if self.shuffle else np.arange(count)
