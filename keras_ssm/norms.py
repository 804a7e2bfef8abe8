"""What normalization layers do in a masked model (``supermask(..., batchnorm=...)``) and the
role :func:`keras_ssm.supermask` gives each layer's own weights.

>>> import keras
>>> bn = FixedAffineBatchNormalization()
>>> bn.build((None, 3))
>>> [v.name for v in bn.trainable_weights], [v.name for v in bn.non_trainable_weights]
([], ['gamma', 'beta', 'moving_mean', 'moving_variance'])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_ssm.layer_tree import iter_layers, own_weights

__all__ = [
    "BATCHNORM",
    "FixedAffineBatchNormalization",
    "apply_role",
    "batchnorm_mode",
    "recalibrate_batchnorm",
]

BATCHNORM = ("stats", "train", "frozen")
"""``batchnorm`` choices of :func:`keras_ssm.supermask` (see there)."""

NORMALIZATION = tuple(
    cls
    for cls in (
        keras.layers.BatchNormalization,
        keras.layers.LayerNormalization,
        keras.layers.GroupNormalization,
        getattr(keras.layers, "RMSNormalization", None),
    )
    if cls is not None
)
# Layers whose weights are statistics of the data, never kernels (whatever their shape).
STATISTICS = (keras.layers.Normalization,)

# What supermask does to a layer's own weights (its sublayers have their own roles):
MASK = "mask"  # a maskable layer, selected: becomes its masked twin
STATS = "stats"  # a BatchNormalization: batch statistics, moving statistics, fixed gamma/beta
TRAIN = "train"  # a normalization layer that trains (batchnorm="train")
FREEZE = "freeze"  # any other layer with weights: they stay as they are, not trainable
KEEP = "keep"  # an already masked layer: unchanged, its scores train
PASS = "pass"  # no weights
GRAPH = "graph"  # a nested Sequential / functional model: converted layer by layer
# Roles that a layer's sublayers carry out one by one, so that layer needs a SupermaskWrapper.
ACTIVE = (MASK, STATS, TRAIN, KEEP)
# Roles a SupermaskWrapper applies to the sublayers of the layer it wraps.
ACTIONS = (MASK, STATS, TRAIN, FREEZE)


@keras.saving.register_keras_serializable(package="keras_ssm", name="FixedAffineBatchNormalization")
class FixedAffineBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` whose ``gamma`` and ``beta`` never train: what
    ``supermask(..., batchnorm="stats")`` (the default) makes of each BatchNormalization.

    In training it normalizes with the batch statistics and updates its moving statistics; at
    inference it uses the moving statistics; its scale and offset keep their values (1 and 0 in a
    fresh model: edge-popup's non-affine BatchNorm).  Same arguments as ``BatchNormalization``;
    setting ``trainable`` leaves gamma and beta frozen.  :func:`keras_ssm.fold` gives back the
    stock layer.
    """

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._fix_affine()

    def _fix_affine(self) -> None:
        for name in ("gamma", "beta"):
            variable = getattr(self, name, None)
            if isinstance(variable, keras.Variable):
                variable.trainable = False

    @property
    def trainable(self) -> bool:
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        keras.layers.Layer.trainable.fset(self, value)
        self._fix_affine()


def norm_class(layer: keras.layers.Layer, role: str) -> type | None:
    """The class a normalization layer becomes for ``role`` (``None``: it stays in place)."""
    if role == STATS and type(layer) is keras.layers.BatchNormalization:
        return FixedAffineBatchNormalization
    if role != STATS and type(layer) is FixedAffineBatchNormalization:
        return keras.layers.BatchNormalization
    return None


def freeze_affine(layer: keras.layers.Layer) -> None:
    """``batchnorm="stats"`` on a BatchNormalization subclass that is kept as it is."""
    layer.trainable = True
    for name in ("gamma", "beta"):
        variable = getattr(layer, name, None)
        if isinstance(variable, keras.Variable):
            variable.trainable = False


def freeze(layer: keras.layers.Layer) -> None:
    """Make ``layer``'s own weights non-trainable: the whole layer if it has no sublayers,
    else its own weights only (its sublayers have their own roles)."""
    if not layer._flatten_layers(include_self=False, recursive=False):
        layer.trainable = False
    else:
        for variable in own_weights(layer):
            variable.trainable = False


def apply_role(layer: keras.layers.Layer, role: str) -> None:
    """Set ``layer``'s trainability for ``role`` (after its weights were copied)."""
    if role == TRAIN:
        layer.trainable = True
    elif role == STATS:
        if isinstance(layer, FixedAffineBatchNormalization):
            layer.trainable = True
        else:
            freeze_affine(layer)
    elif role == FREEZE:
        freeze(layer)


def batchnorm_mode(batchnorm: str | None, train_batchnorm: bool | None) -> str:
    if train_batchnorm is not None:
        legacy = "train" if train_batchnorm else "frozen"
        if batchnorm is not None and batchnorm != legacy:
            raise ValueError(
                f"Pass either batchnorm= or the older train_batchnorm=, not both; received "
                f"batchnorm={batchnorm!r} and train_batchnorm={train_batchnorm!r}."
            )
        return legacy
    batchnorm = "stats" if batchnorm is None else batchnorm
    if batchnorm not in BATCHNORM:
        raise ValueError(
            f"Unknown batchnorm={batchnorm!r}; allowed: {', '.join(map(repr, BATCHNORM))}."
        )
    return batchnorm


def recalibrate_batchnorm(model: keras.Model, data: Iterable[Any], batches: int = 50) -> int:
    """Set the moving statistics of every BatchNormalization that trains (``batchnorm="stats"``
    or ``"train"``; a frozen one is left alone) to the average of its batch statistics over the
    first ``batches`` batches of ``data`` (inputs, or ``(inputs, labels)`` pairs), the model
    running in training mode: "precise BatchNorm" for the network as it is now.

    In training the moving statistics follow the batch statistics with momentum 0.99, an
    average over the last ~100 steps, while the masks that produce them are still changing: at
    the end of a short run they lag behind the final network, and inference (and ``fold``,
    which keeps them) normalizes with stale statistics.  Nothing else changes (the momentum is
    restored).

    Returns:
        How many layers were recalibrated.

    >>> import keras, numpy as np
    >>> bn = FixedAffineBatchNormalization()
    >>> model = keras.Sequential([keras.Input((2,)), bn])
    >>> data = [np.full((4, 2), v, "float32") for v in (1.0, 3.0)]
    >>> recalibrate_batchnorm(model, data), keras.ops.convert_to_numpy(bn.moving_mean).tolist()
    (1, [2.0, 2.0])
    """
    if batches < 1:
        raise ValueError(f"batches must be a positive integer; got {batches!r}")
    layers = [
        layer
        for layer in iter_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    seen = 0
    try:
        for item in data:
            if seen == batches:
                break
            x = item[0] if isinstance(item, (tuple, list)) else item
            for layer in layers:  # a running mean: batch k weighs 1 / (k + 1)
                layer.momentum = seen / (seen + 1)
            model(keras.tree.map_structure(np.asarray, x), training=True)
            seen += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    if not seen:
        raise ValueError("recalibrate_batchnorm: data gave no batch")
    return len(layers)
