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

``MaskedEinsumDense`` (the projections of ``MultiHeadAttention`` and of keras_hub's
transformers) is made the same way.  Other layer types: :func:`register_maskable` defines (and
registers) ``Masked<Layer>`` for any layer type that keeps its kernel the way Dense and Conv do,
which makes it maskable by ``keras_ssm.supermask`` too:

>>> class DoubledDense(keras.layers.Dense):
...     def call(self, inputs):
...         return super().call(inputs) * 2.0
>>> MaskedDoubledDense = keras_ssm.layers.register_maskable(DoubledDense)
>>> layer = MaskedDoubledDense(4, use_bias=False)
>>> tuple(layer(keras.ops.ones((2, 3))).shape), [v.name for v in layer.trainable_variables]
((2, 4), ['scores'])
>>> DoubledDense in keras_ssm.layers.MASKED_LAYERS
True

The stock layers that keep their weights elsewhere (DepthwiseConv, SeparableConv with its two
kernels, ConvTranspose, Embedding, keras_hub's ReversibleEmbedding and PositionEmbedding) are
masked by :mod:`keras_ssm.layers_more`, registered in the same table.  Every masked layer
(:func:`is_masked`) says which weights it masks and how it folds:

>>> layer = keras_ssm.layers.MaskedDense(2, use_bias=False)
>>> _ = layer(keras.ops.ones((1, 3)))
>>> [part.weight for part in layer.masked_parts()], [w.shape for w in layer.folded_weights()]
(['kernel'], [(3, 2)])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
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
    "MaskedDense",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedConv3D",
    "MaskedEinsumDense",
    "MASKED_LAYERS",
    "register_maskable",
    "is_masked",
    "add_lazy_registration",
]

_OWN_ARGS = ("mask", "weight_initializer", "score_initializer", "threshold", "train_bias")
# Stock-config keys of features a masked layer does not have (LoRA, quantization).
_UNSUPPORTED_KEYS = ("lora_rank", "lora_alpha", "quantization_config")


def _resolve_mask(mask: str | dict[str, Any] | masks.Mask, threshold: float | None) -> masks.Mask:
    """The mask a masked layer gets from its ``mask`` and ``threshold`` arguments."""
    if threshold is not None and masks.get(mask).name != "signed":
        raise ValueError(
            f"`threshold` applies only to the 'signed' mask; got threshold={threshold!r} with "
            f"mask={mask!r}. Pass the mask's own arguments through keras_ssm.masks.get()."
        )
    return masks.get(mask, **({} if threshold is None else {"threshold": threshold}))


def _reject_lora(layer: Any, lora_rank: int | None) -> None:
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
        _reject_lora(self, lora_rank)
        self.mask = _resolve_mask(mask, threshold)
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
        return _KERNEL_ARGS

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


def _signature(stock: type[keras.layers.Layer], aliases: tuple[str, ...] = ()) -> inspect.Signature:
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


class _MaskedLayerTable(dict):
    """``MASKED_LAYERS``: a dict that first runs the pending lazy registrations (see
    :func:`add_lazy_registration`) whenever it is read."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[Callable[[], bool]] = []
        self._running = False

    def _resolve(self) -> None:
        if self._running or not self._pending:
            return
        self._running = True
        try:
            self._pending = [hook for hook in self._pending if not hook()]
        finally:
            self._running = False


def _resolving(read: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: _MaskedLayerTable, *args: Any) -> Any:
        self._resolve()
        return read(self, *args)

    method.__name__ = read.__name__
    return method


_READS = ("__contains__", "__getitem__", "__iter__", "__len__", "get", "keys", "values", "items")
for _read in _READS:
    setattr(_MaskedLayerTable, _read, _resolving(getattr(dict, _read)))
del _read


# Stock layer type -> its masked class: the table keras_ssm.supermask converts layers with.
# Extend it with register_maskable (which checks the stock type), not by assigning to it.
MASKED_LAYERS: dict[type[keras.layers.Layer], type[keras.layers.Layer]] = _MaskedLayerTable()


def add_lazy_registration(hook: Callable[[], bool]) -> None:
    """Run ``hook`` whenever :data:`MASKED_LAYERS` is read, until it returns ``True``.

    For masked layers of an optional package that is costly to import (keras_hub): the hook
    registers them once the package has been imported by someone else, so looking a layer of
    that package up in the table finds its masked class.
    """
    MASKED_LAYERS._pending.append(hook)


_KERAS_PACKAGE = "keras_ssm"
_KERNEL_ARGS = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
_CONTRACT = (
    "A maskable layer keeps its kernel the way Dense and Conv do: `build` creates the variable "
    "`self._kernel`, a `kernel` property returns it, `call` reads `self.kernel`, and `__init__` "
    "takes kernel_initializer, kernel_regularizer and kernel_constraint."
)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _stock_problems(stock: type[keras.layers.Layer]) -> list[str]:
    """What in ``stock``'s class breaks the mixin's contract (what can be checked before build)."""
    problems = []
    if not isinstance(inspect.getattr_static(stock, "kernel", None), property):
        problems.append(
            "it has no `kernel` property (it keeps its kernel in a plain attribute or under "
            "another name)"
        )
    if stock.build is keras.layers.Layer.build:
        problems.append("it does not define `build`, where the `_kernel` variable is created")
    init = inspect.signature(stock.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in init.values()):
        missing = [arg for arg in _KERNEL_ARGS if arg not in init]
        if missing:
            problems.append(f"its __init__ does not take {', '.join(missing)}")
    call = list(inspect.signature(stock.call).parameters.values())[2:]  # after self, inputs
    needed = [
        p.name
        for p in call
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if needed:
        problems.append(f"its call needs arguments besides the inputs: {', '.join(needed)}")
    return problems


def register_maskable(
    stock: type[keras.layers.Layer], *, name: str | None = None
) -> type[keras.layers.Layer]:
    """Make the layer type ``stock`` maskable: define, register and return ``Masked<Stock>``.

    The class returned subclasses :class:`MaskedLayerMixin` and ``stock`` (the same arguments
    and defaults, plus the masked layers' own).  It is registered with Keras as
    ``"keras_ssm>" + name``, so models holding it save to and load from ``.keras`` files, and it
    is added to :data:`MASKED_LAYERS`, the table ``keras_ssm.supermask`` converts layers with
    (by exact type: a subclass of a maskable type needs its own registration).  Calling this
    again for the same ``stock`` returns the same class.

    ``stock`` must keep its kernel as Dense, EinsumDense and Conv1D/2D/3D do: ``build`` creates
    the kernel variable as ``self._kernel``, a ``kernel`` property returns it and ``call`` reads
    ``self.kernel``; ``__init__`` takes ``kernel_initializer``, ``kernel_regularizer`` and
    ``kernel_constraint``.  What the class shows is checked here (``ValueError``: e.g. LSTM
    and GRU have no ``kernel``); the rest is checked when a layer is built and first called.
    The stock layers that keep their weights elsewhere (ConvTranspose, DepthwiseConv,
    SeparableConv, Embedding, ...) are masked by :mod:`keras_ssm.layers_more`: for them this
    returns their masked class.

    Like a Keras custom object, a ``.keras`` file holding a ``Masked<Stock>`` layer loads in a
    process that has made ``stock`` maskable first: call this at import time of a module that
    the loading code imports.

    Args:
        stock: a ``keras.layers.Layer`` subclass: a Keras layer or your own (e.g. a subclass of
            Dense).
        name: the class name, ``"Masked" + stock.__name__`` by default; give another one when
            two maskable layer types share a ``__name__``.

    >>> import keras
    >>> register_maskable(keras.layers.Dense) is MaskedDense
    True
    >>> register_maskable(keras.layers.LSTM)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: LSTM cannot be masked: it has no `kernel` property ...
    """
    if not (isinstance(stock, type) and issubclass(stock, keras.layers.Layer)):
        raise ValueError(
            f"register_maskable expects a keras.layers.Layer subclass; received {stock!r}."
        )
    if issubclass(stock, MaskedLayerBase):
        raise ValueError(
            f"{stock.__name__} is already a masked layer (of {stock.stock_class.__name__}); "
            "pass the stock layer type."
        )
    if stock in MASKED_LAYERS:
        cls = MASKED_LAYERS[stock]
        if name is not None and name != cls.__name__:
            raise ValueError(
                f"{stock.__name__} is already maskable as {cls.__name__}; received name={name!r}."
            )
        return cls
    problems = _stock_problems(stock)
    if problems:
        raise ValueError(f"{stock.__name__} cannot be masked: {'; '.join(problems)}. {_CONTRACT}")
    name = f"Masked{stock.__name__}" if name is None else name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"`name` must be a Python identifier (the masked class' name); received {name!r}."
        )
    registered = f"{_KERAS_PACKAGE}>{name}"
    taken = keras.saving.get_custom_objects().get(registered)
    taken_stock = getattr(taken, "stock_class", None)
    # A stock class defined again (a reloaded module, a re-run notebook cell) replaces the old.
    if taken is not None and not (
        isinstance(taken_stock, type) and _qualified(taken_stock) == _qualified(stock)
    ):
        owner = f" (the masked {taken_stock.__name__})" if isinstance(taken_stock, type) else ""
        raise ValueError(
            f"Cannot make {_qualified(stock)} maskable as {name!r}: Keras already has "
            f"{registered!r} registered{owner}. Pass register_maskable(..., name=...) another "
            "class name."
        )
    MASKED_LAYERS.pop(taken_stock, None)
    cls = _define(stock, name)
    MASKED_LAYERS[stock] = cls
    return cls


def _define(stock: type[keras.layers.Layer], name: str) -> type[keras.layers.Layer]:
    """Define ``name``: the mixin on top of a stock layer, registered for ``.keras``."""
    where = "keras.layers" if stock.__module__.split(".")[0] == "keras" else stock.__module__
    doc = (
        f"``{where}.{stock.__name__}`` with a frozen kernel ``w0`` and a learned mask: its "
        f"``kernel`` is ``w0 * mask(scores)``.  Same arguments and defaults as the stock layer, "
        "plus ``mask``, ``weight_initializer``, ``score_initializer``, ``threshold`` and "
        "``train_bias`` (see :mod:`keras_ssm.layers`)."
    )
    cls = type(name, (MaskedLayerMixin, stock), {"__doc__": doc, "stock_class": stock})
    cls.__module__ = __name__
    cls.__signature__ = _signature(stock)
    return keras.saving.register_keras_serializable(package=_KERAS_PACKAGE, name=name)(cls)


MaskedDense = register_maskable(keras.layers.Dense)
MaskedConv1D = register_maskable(keras.layers.Conv1D)
MaskedConv2D = register_maskable(keras.layers.Conv2D)
MaskedConv3D = register_maskable(keras.layers.Conv3D)
MaskedEinsumDense = register_maskable(keras.layers.EinsumDense)


def is_masked(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a masked layer (of this module or of :mod:`keras_ssm.layers_more`)."""
    return isinstance(layer, MaskedLayerBase)
