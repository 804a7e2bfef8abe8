"""Structure-aware masks: a penalty that empties whole units, so that ``shrink`` removes them.

An unstructured signed mask leaves a few weights alive in most units; ``keras_ssm.export.shrink``
can only drop a unit (a Dense column, a Conv filter) whose mask is zero everywhere, so the
exported model stays wide.  :class:`UnitPenalty` is a group-lasso penalty on a masked layer's
*scores*, one group per output unit: ``strength * sum_j ||s[..., j]||_2 / sqrt(group size)``.
Its gradient pulls every score of a weak unit toward 0 together, so all of them fall below the
signed mask's threshold ``tau`` and the unit dies as a whole; strong units keep their scores.

It is an ordinary Keras regularizer, given as a masked layer's ``kernel_regularizer`` (which
masked layers apply to the scores), so it saves and loads with the layer:

>>> import keras, keras_ssm
>>> from keras_ssm.structure import UnitPenalty
>>> layer = keras_ssm.layers.MaskedDense(4, kernel_regularizer=UnitPenalty(1e-3))
>>> _ = layer(keras.ops.ones((2, 6)))
>>> len(layer.losses), float(layer.losses[0]) > 0
(1, True)
>>> keras_ssm.layers.MaskedDense.from_config(layer.get_config()).score_regularizer
UnitPenalty(strength=0.001)

The zoo models take it as ``unit_penalty=`` (hidden layers only: the output layer's units are
the classes), and so do the recipes, :func:`keras_ssm.train` and ``ssm train --unit-penalty``.
:func:`keras_ssm.supermask` takes it for a model of yours, and gives it only to the layers
whose units ``shrink`` can remove.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

__all__ = ["UnitPenalty"]


@keras.saving.register_keras_serializable(package="keras_ssm", name="UnitPenalty")
class UnitPenalty(keras.regularizers.Regularizer):
    """Group lasso over the output units (last axis) of a kernel-shaped variable.

    Args:
        strength: the penalty's weight (>= 0; 0 adds nothing).
        epsilon: keeps the gradient of an all-zero group finite.
    """

    def __init__(self, strength: float = 1e-4, epsilon: float = 1e-12) -> None:
        strength, epsilon = float(strength), float(epsilon)
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"UnitPenalty strength must be a finite number >= 0; got {strength}.")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"UnitPenalty epsilon must be a finite number > 0; got {epsilon}.")
        self.strength = strength
        self.epsilon = epsilon

    def __call__(self, x: Any) -> Any:
        x = ops.cast(x, "float32")
        if len(x.shape) < 2:  # a bias or a scale: no units to empty
            return ops.zeros((), "float32")
        groups = ops.reshape(x, (-1, x.shape[-1]))  # (fan-in, units)
        norms = ops.sqrt(ops.sum(ops.square(groups), axis=0) + self.epsilon)
        return self.strength * ops.sum(norms) / math.sqrt(groups.shape[0])

    def get_config(self) -> dict[str, Any]:
        return {"strength": self.strength, "epsilon": self.epsilon}

    def __repr__(self) -> str:
        return f"UnitPenalty(strength={self.strength:g})"
