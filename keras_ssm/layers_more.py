"""Masked versions of the stock layers whose weights the kernel mixin of :mod:`keras_ssm.layers`
cannot reach: they keep them in plain attributes, under other names, or keep two of them.

- ``DepthwiseConv1D/2D``: ``kernel`` (its arguments: ``depthwise_initializer``, ...).
- ``SeparableConv1D/2D``: ``depthwise_kernel`` and ``pointwise_kernel``, each with its own scores
  (``depthwise_scores``, ``pointwise_scores``) and its own mask state (its own ``tau``).
- ``Conv1D/2D/3DTranspose``: ``kernel``.
- ``Embedding``: ``embeddings``.
- ``ReversibleEmbedding`` (Keras' and keras_hub's): ``embeddings``, and with
  ``tie_weights=False`` also ``reverse_embeddings`` (``reverse_scores``).
- keras_hub's ``PositionEmbedding``: ``position_embeddings`` (its argument: ``initializer``).

Same contract as the masked Dense and Conv layers: each class subclasses its stock layer and takes
the same arguments with the same defaults, plus ``mask``, ``weight_initializer``,
``score_initializer``, ``threshold`` and ``train_bias``.  The stock initializer argument of a
masked weight (``depthwise_initializer``, ``embeddings_initializer``, ...) is an alias of
``weight_initializer`` for that weight; its regularizer and constraint apply to its scores.  The
scores are float32 (also under ``mixed_bfloat16``) and the only trainable variables by default.

How a weight is reached: the stock ``call`` reads it as an attribute (``self.kernel``,
``self.depthwise_kernel``, ``self.embeddings``, ...).  The masked class overrides that name with a
property: its setter stores the frozen variable the stock ``build`` creates under ``"_" + name``
(where Embedding keeps it already), its getter returns ``w0 * mask(scores)``.  So the stock
``build`` and ``call`` run unchanged.

>>> import keras, keras_ssm
>>> from keras_ssm.layers_more import MaskedSeparableConv2D
>>> layer = MaskedSeparableConv2D(4, 3)
>>> tuple(layer(keras.ops.ones((1, 6, 6, 2))).shape)
(1, 4, 4, 4)
>>> [v.name for v in layer.trainable_variables]
['depthwise_scores', 'pointwise_scores']
>>> [part.weight for part in layer.masked_parts()]
['depthwise_kernel', 'pointwise_kernel']
>>> [w.shape for w in layer.folded_weights()]  # SeparableConv2D's get_weights() order
[(3, 3, 2, 1), (1, 1, 2, 4), (4,)]
>>> keras.layers.SeparableConv2D in keras_ssm.layers.MASKED_LAYERS
True

keras_hub is imported only when it is used: its layers' masked classes
(``MaskedPositionEmbedding`` and ``MaskedHubReversibleEmbedding``) are defined once keras_hub has
been imported (``keras_ssm.layers.MASKED_LAYERS`` then finds them), when a ``.keras`` file holding
them is loaded, or by :func:`register_keras_hub`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import keras
from keras import ops

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks
from keras_ssm.layers import MASKED_LAYERS, add_lazy_registration
from keras_ssm.masked_base import (
    MaskedLayerBase,
    MaskedPart,
    reject_lora,
    resolve_mask,
    stock_signature,
)

__all__ = [
    "MaskTarget",
    "MaskedWeightsMixin",
    "MaskedDepthwiseConv1D",
    "MaskedDepthwiseConv2D",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "MaskedConv1DTranspose",
    "MaskedConv2DTranspose",
    "MaskedConv3DTranspose",
    "MaskedEmbedding",
    "MaskedReversibleEmbedding",
    "register_keras_hub",
]

_KERAS_PACKAGE = "keras_ssm"


class MaskTarget(NamedTuple):
    """A weight a masked layer masks, and the stock ``__init__`` arguments describing it."""

    weight: str  # the attribute the stock `call` reads (the frozen w0 is kept at "_" + weight)
    initializer: str  # the argument (and attribute) holding its initializer
    regularizer: str | None = None
    constraint: str | None = None
    prefix: str = ""  # of its scores' and mask state's names: `<prefix>scores`


class MaskedWeightsMixin(MaskedLayerBase):
    """Masks the weights ``mask_targets`` names of a stock layer that reads them as attributes.

    The classes of this module are this mixin on top of their stock layer (see :func:`_define`),
    with a property per masked weight and a ``call`` with the stock signature plus ``training``.
    """

    stock_class: type[keras.layers.Layer]
    mask_targets: ClassVar[tuple[MaskTarget, ...]] = ()
    _stock_call_takes_training: ClassVar[bool] = False

    def __init__(
        self,
        *args: Any,
        mask: str | dict[str, Any] | masks.Mask = "signed",
        weight_initializer: Any = "elus",
        score_initializer: Any = "glorot_uniform",
        threshold: float | None = None,
        train_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        reject_lora(self, kwargs.get("lora_rank"))
        weights = kwargs.pop("weights", None)  # Embedding's initial weights: they become w0
        self.mask = resolve_mask(mask, threshold)
        aliases = self._initializer_args()
        given = {arg: kwargs.pop(arg) for arg in aliases if kwargs.get(arg) is not None}
        for arg in aliases:
            kwargs.pop(arg, None)
        if given and len(given) == len(aliases) and weight_initializer != "elus":
            raise ValueError(
                f"Pass either `weight_initializer` or its alias {' / '.join(aliases)}, not both."
            )
        default = ssm_initializers.get(weight_initializer)
        inits = {a: ssm_initializers.get(given[a]) if a in given else default for a in aliases}
        super().__init__(*args, **inits, **kwargs)
        self.score_initializer = ssm_initializers.get(score_initializer)
        self.train_bias = bool(train_bias)
        # The stock build would attach these to w0; here they belong to the scores.
        regularizers, constraints = {}, {}
        for target in self.mask_targets:
            for arg, table in (
                (target.regularizer, regularizers),
                (target.constraint, constraints),
            ):
                if arg is not None:
                    table[target.weight] = getattr(self, arg)
                    setattr(self, arg, None)
        self._score_regularizers, self._score_constraints = regularizers, constraints
        if weights is not None:
            self.build()
            self.set_stock_weights(weights if isinstance(weights, list) else [weights])

    @classmethod
    def _initializer_args(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(target.initializer for target in cls.mask_targets))

    @classmethod
    def _stock_weight_keys(cls) -> tuple[str, ...]:
        keys = (
            arg
            for target in cls.mask_targets
            for arg in (target.initializer, target.regularizer, target.constraint)
            if arg is not None
        )
        return tuple(dict.fromkeys(keys))

    @property
    def weight_initializer(self) -> keras.initializers.Initializer:
        return getattr(self, self._initializer_args()[0])

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        found = [
            target
            for target in self.mask_targets
            if isinstance(getattr(self, "_" + target.weight, None), keras.Variable)
        ]
        if not found:
            names = ", ".join(target.weight for target in self.mask_targets)
            raise ValueError(
                f"{type(self).__name__}: {self.stock_class.__name__}.build created none of the "
                f"weights it masks ({names})."
            )
        frozen = {id(getattr(self, "_" + target.weight)) for target in found}
        for variable in self.weights:  # what the stock build created: w0 and the bias
            variable.trainable = False if id(variable) in frozen else self.train_bias
        for target in found:
            w0 = getattr(self, "_" + target.weight)
            scores = self.add_weight(
                name=target.prefix + "scores",
                shape=w0.shape,
                initializer=self.score_initializer,
                regularizer=self._score_regularizers.get(target.weight),
                constraint=self._score_constraints.get(target.weight),
                trainable=True,
                autocast=False,  # the mask is always computed from the float32 scores
            )
            setattr(self, target.prefix + "scores", scores)
            setattr(self, target.prefix + "mask_state", self.mask.build(self, scores))
        self._masked_weights = tuple(target.weight for target in found)

    def masked_parts(self) -> list[MaskedPart]:
        """The masked weights (those the stock ``build`` created), in its weight order."""
        names = getattr(self, "_masked_weights", ())
        if not names:
            raise ValueError(f"Layer {self.name!r} is not built yet: it has no masked weights.")
        prefix = {target.weight: target.prefix for target in self.mask_targets}
        return [
            MaskedPart(
                name,
                getattr(self, "_" + name),
                getattr(self, prefix[name] + "scores"),
                getattr(self, prefix[name] + "mask_state"),
            )
            for name in names
        ]

    @property
    def w0(self) -> keras.Variable:
        """The frozen initial weights of a layer that masks one weight."""
        names = getattr(self, "_masked_weights", ())
        if len(names) != 1:
            raise AttributeError(
                f"Layer {self.name!r} masks {len(names)} weights ({', '.join(names)}); "
                "use masked_parts() for their w0."
                if names
                else "You must build the layer before accessing `w0`."
            )
        return getattr(self, "_" + names[0])

    def _masked_value(self, weight: str) -> Any:
        """``w0 * M`` for ``weight``: in the layer's compute dtype inside a call (mixed precision
        autocasts ``w0``; ``M`` comes from the float32 scores), in float32 outside."""
        if weight not in getattr(self, "_masked_weights", ()):
            raise AttributeError(
                f"{type(self).__name__} {self.name!r} has no `{weight}`."
                if self.built and getattr(self, "_masked_weights", ())
                else f"You must build the layer before accessing `{weight}`."
            )
        self._mask_read = True
        training = getattr(self, "_mask_training", None)
        mask_values = self.compute_mask_values(training=training, weight=weight)
        w0 = ops.convert_to_tensor(getattr(self, "_" + weight))  # autocast inside a call
        return ops.multiply(w0, ops.cast(mask_values, w0.dtype))

    def _masked_call(self, args: tuple, kwargs: dict[str, Any], training: Any) -> Any:
        if self._stock_call_takes_training:
            kwargs = {**kwargs, "training": training}
        self._mask_training, self._mask_read = training, False
        try:
            outputs = super().call(*args, **kwargs)
        finally:
            self._mask_training = None
        if not self._mask_read:
            raise ValueError(
                f"{type(self).__name__}: {self.stock_class.__name__}.call read none of the "
                "weights it masks, so no mask would apply."
            )
        return outputs

    def compute_output_spec(self, *args: Any, training: Any = None, **kwargs: Any) -> Any:
        # A symbolic call passes `training` on; the stock output spec does not depend on it.
        return super().compute_output_spec(*args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        aliases = self._initializer_args()
        inits = {arg: keras.initializers.serialize(getattr(self, arg)) for arg in aliases}
        for arg in aliases:
            config.pop(arg, None)
        first = inits[aliases[0]]
        config.update({arg: value for arg, value in inits.items() if value != first})
        config.update(
            {
                "mask": masks.serialize(self.mask),
                "weight_initializer": first,
                "score_initializer": keras.initializers.serialize(self.score_initializer),
                "train_bias": self.train_bias,
            }
        )
        for target in self.mask_targets:
            if target.regularizer is not None:
                regularizer = self._score_regularizers.get(target.weight)
                config[target.regularizer] = keras.regularizers.serialize(regularizer)
            if target.constraint is not None:
                constraint = self._score_constraints.get(target.weight)
                config[target.constraint] = keras.constraints.serialize(constraint)
        return config

    def stock_config(self) -> dict[str, Any]:
        """The config of the equivalent stock layer (what :func:`keras_ssm.fold` builds): the
        masked weights' initializers, regularizers and constraints at the stock defaults."""
        config = super().get_config()
        defaults = inspect.signature(self.stock_class.__init__).parameters
        for arg in self._stock_weight_keys():
            config[arg] = defaults[arg].default if arg in defaults else None
        return config


def _weight_property(weight: str) -> property:
    def fget(self: MaskedWeightsMixin) -> Any:
        return self._masked_value(weight)

    def fset(self: MaskedWeightsMixin, value: Any) -> None:
        setattr(self, "_" + weight, value)  # the stock build's variable: the frozen w0

    doc = f"``w0 * mask(scores)``: what the stock ``call`` reads as ``{weight}``."
    return property(fget, fset, doc=doc)


def _call_with_training(stock: type[keras.layers.Layer]) -> tuple[Callable[..., Any], bool]:
    """A ``call`` with the stock signature plus ``training`` (Keras reads the signature to pass
    it), and whether the stock ``call`` takes ``training`` itself."""
    signature = inspect.signature(stock.call)
    takes_training = "training" in signature.parameters
    params = list(signature.parameters.values())
    if not takes_training:
        training = inspect.Parameter("training", inspect.Parameter.KEYWORD_ONLY, default=None)
        at = len(params) - (params[-1].kind is inspect.Parameter.VAR_KEYWORD)
        params.insert(at, training)

    def call(self: MaskedWeightsMixin, *args: Any, training: Any = None, **kwargs: Any) -> Any:
        return self._masked_call(args, kwargs, training)

    call.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    call.__doc__ = stock.call.__doc__
    return call, takes_training


def _define(
    stock: type[keras.layers.Layer], targets: list[MaskTarget], name: str | None = None
) -> type[keras.layers.Layer]:
    """Define, register (with Keras and in ``MASKED_LAYERS``) and return ``Masked<Stock>``."""
    name = name or f"Masked{stock.__name__}"
    where = "keras.layers" if stock.__module__.split(".")[0] == "keras" else stock.__module__
    masked = " and ".join(f"``{target.weight}``" for target in targets)
    doc = (
        f"``{where}.{stock.__name__}`` with frozen weights ``w0`` and learned masks: its "
        f"{masked} read as ``w0 * mask(scores)``.  Same arguments and defaults as the stock "
        "layer, plus ``mask``, ``weight_initializer``, ``score_initializer``, ``threshold`` and "
        "``train_bias`` (see :mod:`keras_ssm.layers_more`)."
    )
    call, takes_training = _call_with_training(stock)
    namespace = {
        "__doc__": doc,
        "__module__": __name__,
        "stock_class": stock,
        "mask_targets": tuple(targets),
        "_stock_call_takes_training": takes_training,
        "call": call,
        **{target.weight: _weight_property(target.weight) for target in targets},
    }
    cls = type(name, (MaskedWeightsMixin, stock), namespace)
    aliases = tuple(dict.fromkeys(target.initializer for target in targets))
    cls.__signature__ = stock_signature(stock, aliases)
    keras.saving.register_keras_serializable(package=_KERAS_PACKAGE, name=name)(cls)
    MASKED_LAYERS[stock] = cls
    return cls


def _target(weight: str, args: str, prefix: str = "") -> MaskTarget:
    """``weight``, described by the stock arguments ``<args>_initializer`` (etc.)."""
    return MaskTarget(
        weight, f"{args}_initializer", f"{args}_regularizer", f"{args}_constraint", prefix
    )


_DEPTHWISE = [_target("kernel", "depthwise")]
_SEPARABLE = [
    _target("depthwise_kernel", "depthwise", "depthwise_"),
    _target("pointwise_kernel", "pointwise", "pointwise_"),
]
_TRANSPOSE = [_target("kernel", "kernel")]
_EMBEDDING = [_target("embeddings", "embeddings")]
_REVERSIBLE = [
    *_EMBEDDING,
    MaskTarget("reverse_embeddings", "embeddings_initializer", None, None, "reverse_"),
]

MaskedDepthwiseConv1D = _define(keras.layers.DepthwiseConv1D, _DEPTHWISE)
MaskedDepthwiseConv2D = _define(keras.layers.DepthwiseConv2D, _DEPTHWISE)
MaskedSeparableConv1D = _define(keras.layers.SeparableConv1D, _SEPARABLE)
MaskedSeparableConv2D = _define(keras.layers.SeparableConv2D, _SEPARABLE)
MaskedConv1DTranspose = _define(keras.layers.Conv1DTranspose, _TRANSPOSE)
MaskedConv2DTranspose = _define(keras.layers.Conv2DTranspose, _TRANSPOSE)
MaskedConv3DTranspose = _define(keras.layers.Conv3DTranspose, _TRANSPOSE)
MaskedEmbedding = _define(keras.layers.Embedding, _EMBEDDING)
MaskedReversibleEmbedding = _define(keras.layers.ReversibleEmbedding, _REVERSIBLE)


# ----------------------------------------------------------------------------------- keras_hub
_HUB_NAMES = ("MaskedPositionEmbedding", "MaskedHubReversibleEmbedding")


def register_keras_hub() -> None:
    """Define and register the masked classes of keras_hub's layers (imports keras_hub):
    ``MaskedPositionEmbedding`` and ``MaskedHubReversibleEmbedding``.  Calling it again does
    nothing."""
    if all(name in globals() for name in _HUB_NAMES):
        return
    import keras_hub

    hub = keras_hub.layers
    position = MaskTarget("position_embeddings", "initializer")
    globals()["MaskedPositionEmbedding"] = _define(hub.PositionEmbedding, [position])
    globals()["MaskedHubReversibleEmbedding"] = _define(
        hub.ReversibleEmbedding, _REVERSIBLE, name="MaskedHubReversibleEmbedding"
    )


def _register_keras_hub_once_imported() -> bool:
    """The lazy hook (see ``keras_ssm.layers.add_lazy_registration``): done once keras_hub is."""
    if "keras_hub" not in sys.modules:
        return False
    try:
        register_keras_hub()
    except ImportError:  # a broken keras_hub: its layers stay unmaskable
        pass
    return True


class _LoadsKerasHub:
    """Stands in Keras' registry for a keras_hub masked class until it is defined: a ``.keras``
    file holding one loads without importing keras_hub first."""

    def __init__(self, name: str) -> None:
        self.name = name

    def from_config(self, config: dict[str, Any]) -> Any:
        register_keras_hub()
        return globals()[self.name].from_config(config)


def __getattr__(name: str) -> Any:
    if name in _HUB_NAMES:
        try:
            register_keras_hub()
        except ImportError as err:
            raise AttributeError(f"{name} needs keras_hub, which does not import: {err}") from err
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _register_keras_hub_once_imported():
    add_lazy_registration(_register_keras_hub_once_imported)
    for _name in _HUB_NAMES:
        keras.saving.register_keras_serializable(_KERAS_PACKAGE, _name)(_LoadsKerasHub(_name))
