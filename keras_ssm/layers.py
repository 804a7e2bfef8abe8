"""Masked versions of the stock Keras layers: ``kernel = w0 * mask(scores)``.

Each layer subclasses its stock Keras layer, takes the same arguments with the same defaults,
and adds ``mask``, ``weight_initializer``, ``score_initializer``, ``threshold`` and
``train_bias``.  The frozen weights ``w0`` live where the stock layer keeps its kernel
(``_kernel``, non-trainable); the public ``kernel`` property returns ``w0 * M``, so the stock
``call`` runs unchanged.  Only the ``scores`` train by default.

>>> import keras, keras_ssm
>>> layer = keras_ssm.layers.MaskedDense(3, mask="signed", threshold=0.4)
>>> y = layer(keras.ops.ones((2, 5)))
>>> [v.name for v in layer.trainable_variables]
['scores']

``kernel_regularizer`` and ``kernel_constraint`` apply to the scores (the trainable stand-in for
the kernel); ``kernel_initializer`` is an alias of ``weight_initializer``.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
from keras import ops

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks

__all__ = ["MaskedLayerMixin", "MaskedDense", "MaskedConv1D", "MaskedConv2D", "MaskedConv3D"]

_OWN_ARGS = ("mask", "weight_initializer", "score_initializer", "threshold", "train_bias")


class MaskedLayerMixin:
    """Turns a stock Keras layer that keeps its kernel in ``_kernel`` into a masked layer."""

    stock_class: type[keras.layers.Layer]

    def __init__(
        self,
        *args: Any,
        mask: str | dict[str, Any] | masks.Mask = "signed",
        weight_initializer: Any = "elus",
        score_initializer: Any = "glorot_uniform",
        threshold: float | None = None,
        train_bias: bool = False,
        kernel_initializer: Any = None,
        lora_rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        if lora_rank:
            raise ValueError(
                f"{type(self).__name__} does not support LoRA; got lora_rank={lora_rank}."
            )
        overrides = {} if threshold is None else {"threshold": threshold}
        if threshold is not None and masks.get(mask).name != "signed":
            raise ValueError(
                f"`threshold` applies only to the 'signed' mask; got threshold={threshold!r} with "
                f"mask={mask!r}. Pass the mask's own arguments through keras_ssm.masks.get()."
            )
        self.mask = masks.get(mask, **overrides)
        if kernel_initializer is not None and weight_initializer != "elus":
            raise ValueError(
                "Pass either `weight_initializer` or its alias `kernel_initializer`, not both."
            )
        w_init = ssm_initializers.get(kernel_initializer or weight_initializer)
        super().__init__(*args, kernel_initializer=w_init, **kwargs)
        self.score_initializer = ssm_initializers.get(score_initializer)
        self.train_bias = bool(train_bias)
        # The stock build attaches these to `_kernel`; here they belong to the scores.
        self.score_regularizer, self.kernel_regularizer = self.kernel_regularizer, None
        self.score_constraint, self.kernel_constraint = self.kernel_constraint, None

    @property
    def weight_initializer(self) -> keras.initializers.Initializer:
        return self.kernel_initializer

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._kernel.trainable = False
        if self.bias is not None:
            self.bias.trainable = self.train_bias
        self.scores = self.add_weight(
            name="scores",
            shape=self._kernel.shape,
            initializer=self.score_initializer,
            regularizer=self.score_regularizer,
            constraint=self.score_constraint,
            trainable=True,
            autocast=False,  # the mask is always computed from the float32 scores
        )
        self.mask_state = self.mask.build(self, self.scores)

    @property
    def w0(self) -> keras.Variable:
        """The frozen initial weights."""
        return self._kernel

    def compute_mask_values(self, training: bool | None = None) -> Any:
        """The mask ``M`` (same shape as the kernel) for the current scores."""
        return self.mask(masks.read(self.scores), self.mask_state, training=training)

    @property
    def kernel(self) -> Any:
        """``w0 * M`` in the layer's compute dtype inside a call (mixed precision autocasts
        ``w0``), in float32 outside.  ``M`` comes from the float32 scores and threshold, so
        it is the mask :func:`keras_ssm.fold` and :func:`keras_ssm.mask_stats` see; with
        ``M`` in {-1, 0, 1}, ``cast(w0) * M`` equals ``cast(w0 * M)`` exactly."""
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        mask_values = self.compute_mask_values(training=getattr(self, "_mask_training", None))
        w0 = ops.convert_to_tensor(self._kernel)  # autocast inside a mixed-precision call
        return ops.multiply(w0, ops.cast(mask_values, w0.dtype))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        self._mask_training = training
        try:
            return super().call(inputs)
        finally:
            self._mask_training = None

    def _own_variables(self) -> list[keras.Variable]:
        state = [v for v in self.mask_state.values() if isinstance(v, keras.Variable)]
        seeds = [
            g.state for g in self.mask_state.values() if isinstance(g, keras.random.SeedGenerator)
        ]
        bias = [] if self.bias is None else [self.bias]
        return [self._kernel, self.scores, *bias, *state, *seeds]

    def save_own_variables(self, store: Any) -> None:
        for i, variable in enumerate(self._own_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store: Any) -> None:
        variables = self._own_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer {self.name!r} expected {len(variables)} saved variables "
                f"(w0, scores, bias, mask state) but the file holds {len(store.keys())}."
            )
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("kernel_initializer", None)
        config.update(
            {
                "mask": masks.serialize(self.mask),
                "weight_initializer": keras.initializers.serialize(self.kernel_initializer),
                "score_initializer": keras.initializers.serialize(self.score_initializer),
                "train_bias": self.train_bias,
                "kernel_regularizer": keras.regularizers.serialize(self.score_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.score_constraint),
            }
        )
        return config

    def stock_config(self) -> dict[str, Any]:
        """The config of the equivalent stock layer (what :func:`keras_ssm.fold` builds)."""
        config = super().get_config()
        config["kernel_initializer"] = "glorot_uniform"
        config["kernel_regularizer"] = None
        config["kernel_constraint"] = None
        return config


def _signature(stock: type[keras.layers.Layer]) -> inspect.Signature:
    """The stock layer's signature with this module's arguments added (for help() and tests)."""
    own = inspect.signature(MaskedLayerMixin.__init__).parameters
    params = []
    for param in inspect.signature(stock.__init__).parameters.values():
        if param.name == "self" or param.kind is param.VAR_KEYWORD:
            continue
        if param.name in own:  # e.g. kernel_initializer, whose default is None here
            param = param.replace(default=own[param.name].default)
        params.append(param)
    params += [own[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in _OWN_ARGS]
    params.append(own["kwargs"])
    return inspect.Signature(params)


def _masked(stock: type[keras.layers.Layer]) -> type[keras.layers.Layer]:
    """Define ``Masked<stock>``: the mixin on top of a stock layer, registered for ``.keras``."""
    name = f"Masked{stock.__name__}"
    doc = (
        f"``keras.layers.{stock.__name__}`` with a frozen kernel ``w0`` and a learned mask: its "
        f"``kernel`` is ``w0 * mask(scores)``.  Same arguments and defaults as the stock layer, "
        "plus ``mask``, ``weight_initializer``, ``score_initializer``, ``threshold`` and "
        "``train_bias`` (see :mod:`keras_ssm.layers`)."
    )
    cls = type(name, (MaskedLayerMixin, stock), {"__doc__": doc, "stock_class": stock})
    cls.__module__ = __name__
    cls.__signature__ = _signature(stock)
    return keras.saving.register_keras_serializable(package="keras_ssm", name=name)(cls)


MaskedDense = _masked(keras.layers.Dense)
MaskedConv1D = _masked(keras.layers.Conv1D)
MaskedConv2D = _masked(keras.layers.Conv2D)
MaskedConv3D = _masked(keras.layers.Conv3D)

MASKED_LAYERS: dict[type[keras.layers.Layer], type[keras.layers.Layer]] = {
    cls.stock_class: cls for cls in (MaskedDense, MaskedConv1D, MaskedConv2D, MaskedConv3D)
}


def is_masked(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is one of this module's masked layers."""
    return isinstance(layer, MaskedLayerMixin)
