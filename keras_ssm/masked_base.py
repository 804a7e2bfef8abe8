"""The masked-layer contract: what every masked layer (:mod:`keras_ssm.layers`,
:mod:`keras_ssm.layers_more`) shares -- frozen ``w0``, trainable scores, the mask, folding.

:class:`MaskedLayerBase` is the interface (which weights are masked, how they fold, stock
config in and out); :class:`MaskedLayerMixin` implements it for stock layers that keep their
kernel as ``self._kernel`` behind a ``kernel`` property (Dense, EinsumDense, Conv).

>>> import keras
>>> from keras_ssm.layers import MaskedDense
>>> issubclass(MaskedDense, MaskedLayerMixin) and issubclass(MaskedDense, MaskedLayerBase)
True
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks

__all__ = [
    "MaskedLayerBase",
    "MaskedLayerMixin",
    "MaskedPart",
    "reject_lora",
    "resolve_mask",
    "stock_signature",
]

# The stock constructor arguments a masked layer takes over for its masked weight.
KERNEL_ARGS = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
_OWN_ARGS = ("mask", "weight_initializer", "score_initializer", "threshold", "train_bias")
# Stock-config keys of features a masked layer does not have (LoRA, quantization).
_UNSUPPORTED_KEYS = ("lora_rank", "lora_alpha", "quantization_config")


def resolve_mask(mask: str | dict[str, Any] | masks.Mask, threshold: float | None) -> masks.Mask:
    """The mask a masked layer gets from its ``mask`` and ``threshold`` arguments."""
    if threshold is not None and masks.get(mask).name != "signed":
        raise ValueError(
            f"`threshold` applies only to the 'signed' mask; got threshold={threshold!r} with "
            f"mask={mask!r}. Pass the mask's own arguments through keras_ssm.masks.get()."
        )
    return masks.get(mask, **({} if threshold is None else {"threshold": threshold}))


def reject_lora(layer: Any, lora_rank: int | None) -> None:
    if lora_rank:
        raise ValueError(
            f"{type(layer).__name__} does not support LoRA; got lora_rank={lora_rank}."
        )


class MaskedPart(NamedTuple):
    """One masked weight of a masked layer: the stock attribute ``weight`` the stock ``call``
    reads (``"kernel"``, ``"depthwise_kernel"``, ...), its frozen ``w0``, its ``scores`` and
    its mask's per-weight state (e.g. the signed mask's ``tau``)."""

    weight: str
    w0: keras.Variable
    scores: keras.Variable
    mask_state: dict[str, Any]


def _state_variables(part: MaskedPart) -> list[keras.Variable]:
    """The variables of a part's mask state, then its seed generators' states."""
    state = [v for v in part.mask_state.values() if isinstance(v, keras.Variable)]
    seeds = [g.state for g in part.mask_state.values() if isinstance(g, keras.random.SeedGenerator)]
    return [*state, *seeds]


class MaskedLayerBase:
    """What every masked layer offers, whatever stock layer it masks (see :func:`is_masked`).

    A masked layer masks one weight (Dense, Conv, Embedding, ...) or several (SeparableConv's
    depthwise and pointwise kernels), each with its own scores and mask state;
    :meth:`masked_parts` lists them in the stock layer's weight order.  Subclasses define
    ``masked_parts``, ``stock_config`` and ``_stock_weight_keys`` (the stock-config keys that
    describe the masked weights: their initializers, regularizers and constraints).
    """

    stock_class: type[keras.layers.Layer]
    mask: masks.Mask

    def masked_parts(self) -> list[MaskedPart]:
        """The masked weights of the built layer, in the stock layer's weight order."""
        raise NotImplementedError

    def stock_config(self) -> dict[str, Any]:
        """The config of the equivalent stock layer (what :func:`keras_ssm.fold` builds)."""
        raise NotImplementedError

    @classmethod
    def _stock_weight_keys(cls) -> tuple[str, ...]:
        raise NotImplementedError

    def _part(self, weight: str | None) -> MaskedPart:
        parts = self.masked_parts()
        if weight is None:
            if len(parts) == 1:
                return parts[0]
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) masks {len(parts)} weights "
                f"({', '.join(p.weight for p in parts)}); pass weight= one of them, or use "
                "masked_parts()."
            )
        for part in parts:
            if part.weight == weight:
                return part
        raise ValueError(
            f"Layer {self.name!r} ({type(self).__name__}) masks no weight {weight!r}; its masked "
            f"weights are: {', '.join(p.weight for p in parts)}."
        )

    def compute_mask_values(self, training: bool | None = None, weight: str | None = None) -> Any:
        """The mask ``M`` (same shape as the weight) for the current scores.

        ``weight`` names the masked weight (see :meth:`masked_parts`); it may be left out for a
        layer that masks one weight.
        """
        part = self._part(weight)
        return self.mask(masks.read(part.scores), part.mask_state, training=training)

    def _stock_weights(self) -> list[keras.Variable]:
        """The variables the stock ``build`` created (``w0`` in place of each masked weight,
        and the bias), in the stock layer's ``get_weights()`` order."""
        own = set()
        for part in self.masked_parts():
            own.update(id(v) for v in (part.scores, *_state_variables(part)))
        return [w for w in self.weights if id(w) not in own]

    def folded_weights(self) -> list[np.ndarray]:
        """The stock layer's ``get_weights()`` with each masked weight replaced by ``w0 * M``.

        ``M`` is the inference-mode mask (a binary mask is ``sigmoid(s) > 0.5``); each product is
        the exact float32 ``w0 * M``.  ``stock_class.from_config(stock_config())`` given these
        weights computes what this layer computes: it is what :func:`keras_ssm.fold` builds.
        """
        parts = {id(part.w0): part for part in self.masked_parts()}
        weights = []
        for variable in self._stock_weights():
            value = np.asarray(ops.convert_to_numpy(variable))
            part = parts.get(id(variable))
            if part is not None:
                mask_values = self.compute_mask_values(training=False, weight=part.weight)
                mask_np = np.asarray(ops.convert_to_numpy(mask_values), dtype=np.float32)
                value = value.astype(np.float32) * mask_np
            weights.append(value)
        return weights

    def set_stock_weights(self, weights: list[Any]) -> None:
        """Set ``w0`` (and the bias) from a stock layer's ``get_weights()``; the scores stay."""
        variables = self._stock_weights()
        if len(weights) != len(variables):
            raise ValueError(
                f"Layer {self.name!r} expects {len(variables)} stock weights "
                f"({', '.join(v.name for v in variables)}); received {len(weights)}."
            )
        for variable, value in zip(variables, weights, strict=True):
            if tuple(np.shape(value)) != tuple(variable.shape):
                raise ValueError(
                    f"Layer {self.name!r}: stock weight {variable.name!r} has shape "
                    f"{tuple(variable.shape)}; received shape {tuple(np.shape(value))}."
                )
            variable.assign(value)

    def _own_variables(self) -> list[keras.Variable]:
        """What a ``.keras`` file holds, in order: the stock weights, then each part's scores
        and mask state (nothing before the layer is built)."""
        if not self.built:
            return []
        parts = [(part.scores, *_state_variables(part)) for part in self.masked_parts()]
        return [*self._stock_weights(), *(v for part in parts for v in part)]

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

    @classmethod
    def from_stock_config(cls, config: dict[str, Any], **masked_args: Any) -> Any:
        """The masked twin of the stock layer with ``config``: the config's description of the
        masked weights (their initializers, regularizers, constraints) and LoRA/quantization
        keys are dropped, ``masked_args`` (``mask``, ``weight_initializer``, ...) are added."""
        drop = {*cls._stock_weight_keys(), *_UNSUPPORTED_KEYS}
        return cls(**{k: v for k, v in config.items() if k not in drop}, **masked_args)


class MaskedLayerMixin(MaskedLayerBase):
    """Turns a stock Keras layer that keeps its kernel in ``_kernel`` into a masked layer.

    The contract with the stock layer (see :func:`register_maskable`): ``build`` creates the
    kernel variable as ``self._kernel`` (and ``self.bias``, or sets it to ``None``), ``call``
    reads the kernel through the ``kernel`` property (which this mixin overrides), and
    ``__init__`` takes ``kernel_initializer``, ``kernel_regularizer`` and ``kernel_constraint``.
    """

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
        reject_lora(self, lora_rank)
        self.mask = resolve_mask(mask, threshold)
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
        if not isinstance(getattr(self, "_kernel", None), keras.Variable):
            raise ValueError(
                f"{type(self).__name__}: {self.stock_class.__name__}.build did not create its "
                "kernel variable as `self._kernel`, which a masked layer needs (see "
                "keras_ssm.layers.register_maskable)."
            )
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

    def masked_parts(self) -> list[MaskedPart]:
        """The one masked weight: ``kernel``."""
        return [MaskedPart("kernel", self._kernel, self.scores, self.mask_state)]

    @classmethod
    def _stock_weight_keys(cls) -> tuple[str, ...]:
        return KERNEL_ARGS

    @property
    def kernel(self) -> Any:
        """``w0 * M`` in the layer's compute dtype inside a call (mixed precision autocasts
        ``w0``), in float32 outside.  ``M`` comes from the float32 scores and threshold, so
        it is the mask :func:`keras_ssm.fold` and :func:`keras_ssm.mask_stats` see; with
        ``M`` in {-1, 0, 1}, ``cast(w0) * M`` equals ``cast(w0 * M)`` exactly."""
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        self._kernel_read = True
        mask_values = self.compute_mask_values(training=getattr(self, "_mask_training", None))
        w0 = ops.convert_to_tensor(self._kernel)  # autocast inside a mixed-precision call
        return ops.multiply(w0, ops.cast(mask_values, w0.dtype))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        self._mask_training, self._kernel_read = training, False
        try:
            outputs = super().call(inputs)
        finally:
            self._mask_training = None
        if not self._kernel_read:
            raise ValueError(
                f"{type(self).__name__}: {self.stock_class.__name__}.call did not read the "
                "`kernel` property, so the mask would never apply (see "
                "keras_ssm.layers.register_maskable)."
            )
        return outputs

    def _own_variables(self) -> list[keras.Variable]:
        # The order .keras files written so far hold: w0, scores, bias, mask state.
        state = [v for v in self.mask_state.values() if isinstance(v, keras.Variable)]
        seeds = [
            g.state for g in self.mask_state.values() if isinstance(g, keras.random.SeedGenerator)
        ]
        bias = [] if self.bias is None else [self.bias]
        return [self._kernel, self.scores, *bias, *state, *seeds]

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


def stock_signature(
    stock: type[keras.layers.Layer], aliases: tuple[str, ...] = ()
) -> inspect.Signature:
    """The stock layer's signature with this module's arguments added (for help() and tests).

    ``aliases`` (e.g. ``depthwise_initializer``) default to ``None`` here, as ``kernel_initializer``
    does: they stand for ``weight_initializer``."""
    own = inspect.signature(MaskedLayerMixin.__init__).parameters
    params = []
    for param in inspect.signature(stock.__init__).parameters.values():
        if param.name == "self" or param.kind is param.VAR_KEYWORD:
            continue
        if param.name in own:  # e.g. kernel_initializer, whose default is None here
            param = param.replace(default=own[param.name].default)
        elif param.name in aliases:
            param = param.replace(default=None)
        params.append(param)
    params += [own[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in _OWN_ARGS]
    params.append(own["kwargs"])
    return inspect.Signature(params)
