"""What normalization layers do in a masked model (``supermask(..., batchnorm=...)``) and the
role :func:`keras_ssm.supermask` gives each layer's own weights.

>>> import keras
>>> bn = FixedAffineBatchNormalization()
>>> bn.build((None, 3))
>>> [v.name for v in bn.trainable_weights], [v.name for v in bn.non_trainable_weights]
([], ['gamma', 'beta', 'moving_mean', 'moving_variance'])
"""

from __future__ import annotations

from typing import Any

import keras

from keras_ssm.layer_tree import own_weights

__all__ = ["BATCHNORM", "FixedAffineBatchNormalization", "apply_role", "batchnorm_mode"]

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
