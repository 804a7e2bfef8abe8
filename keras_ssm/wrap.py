"""Whole models: ``supermask`` swaps Dense/Conv layers for masked ones; ``fold`` swaps them back.

>>> import keras, keras_ssm
>>> dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
...                           keras.layers.Dense(2)])
>>> masked = keras_ssm.supermask(dense, mask="signed")
>>> [type(layer).__name__ for layer in masked.layers]
['MaskedDense', 'MaskedDense']
>>> folded = keras_ssm.fold(masked)          # stock Dense layers with kernels w0 * M
>>> [type(layer).__name__ for layer in folded.layers]
['Dense', 'Dense']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
from keras import ops

from keras_ssm import masks
from keras_ssm.layers import MASKED_LAYERS, is_masked

__all__ = [
    "supermask",
    "fold",
    "to_float32",
    "iter_layers",
    "masked_layers",
    "UnsupportedLayerError",
]

LayerFilter = Callable[[keras.layers.Layer], bool] | Iterable[str] | None

_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
# Stock-config keys that describe the dense kernel and do not carry over to the mask.
_KERNEL_ONLY_KEYS = (
    "kernel_initializer",
    "kernel_regularizer",
    "kernel_constraint",
    "lora_rank",
    "lora_alpha",
    "quantization_config",
)


# Training-only dtype policies: what is deployed (folded, exported, evaluated) computes in float32.
_LOW_PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def _float32_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a mixed / half-precision ``dtype`` policy replaced by float32."""
    dtype = config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name in _LOW_PRECISION_POLICIES:
        return {**config, "dtype": "float32"}
    return config


class UnsupportedLayerError(ValueError):
    """A model or layer that :func:`supermask` cannot convert."""


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, depth first, descending into nested models."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def masked_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The masked layers of ``model`` (nested models included), in order."""
    return [layer for layer in iter_layers(model) if is_masked(layer)]


def _is_graph_model(model: Any) -> bool:
    if isinstance(model, keras.Sequential):
        return True
    return any(cls.__name__ == "Functional" for cls in type(model).__mro__)


def _check_graph_model(model: Any, verb: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{verb} expects a keras.Model; received {type(model).__name__}.")
    if not _is_graph_model(model):
        raise UnsupportedLayerError(
            f"{verb} supports Sequential and functional models only; {model.name!r} is a "
            f"subclassed model ({type(model).__name__}). Build it with the functional API, or "
            "use keras_ssm.layers.MaskedDense / MaskedConv2D directly inside your class."
        )
    for layer in iter_layers(model):
        if isinstance(layer, keras.Model) and not _is_graph_model(layer):
            raise UnsupportedLayerError(
                f"{verb}: nested model {layer.name!r} ({type(layer).__name__}) is subclassed; "
                "only Sequential and functional models can be cloned."
            )
    if not model.built:
        raise ValueError(f"{verb}: model {model.name!r} is not built; give it an Input first.")


def _selector(layers: LayerFilter) -> Callable[[keras.layers.Layer], bool]:
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    names = {layers} if isinstance(layers, str) else set(layers)
    return lambda layer: layer.name in names


def _has_weights(layer: keras.layers.Layer) -> bool:
    return bool(layer.weights) and not isinstance(layer, keras.Model)


def supermask(
    model: keras.Model,
    mask: str | dict[str, Any] | masks.Mask = "signed",
    *,
    threshold: float | None = None,
    weight_initializer: Any = "elus",
    score_initializer: Any = "glorot_uniform",
    layers: LayerFilter = None,
    reinitialize: bool = True,
    train_batchnorm: bool = False,
    train_bias: bool = False,
    strict: bool = True,
) -> keras.Model:
    """Clone ``model`` with every Dense/Conv layer (or those ``layers`` selects) masked.

    Args:
        model: a built Sequential or functional model (nested ones are converted too).
        mask: the mask for every converted layer (see :func:`keras_ssm.masks.get`).
        threshold: the signed mask's threshold (fraction of the initial max |score|).
        weight_initializer: initializer of the frozen weights ``w0`` when ``reinitialize``.
        score_initializer: initializer of the scores.
        layers: which layers to mask: ``None`` (all Dense/Conv), a collection of layer names,
            or a function ``layer -> bool``.
        reinitialize: draw a fresh ``w0`` (the method; default) or keep the model's own kernels
            and biases as ``w0`` (``False``).
        train_batchnorm: let normalization layers train (default: frozen, the pure method).
        train_bias: let the converted layers' biases train (default: frozen).
        strict: raise on a selected layer that has weights but cannot be masked (e.g. an
            Embedding or LSTM); with ``False`` such layers pass through, frozen.

    Every layer that is not masked keeps its weights; by default only the scores train.
    """
    _check_graph_model(model, "supermask")
    select = _selector(layers)
    unsupported = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in iter_layers(model)
        if _has_weights(layer)
        and select(layer)
        and not is_masked(layer)
        and type(layer) not in MASKED_LAYERS
        and not isinstance(layer, _NORMALIZATION)
    ]
    if unsupported and strict:
        allowed = ", ".join(cls.__name__ for cls in MASKED_LAYERS)
        raise UnsupportedLayerError(
            f"supermask cannot mask these layers: {', '.join(unsupported)}. Maskable layer types: "
            f"{allowed}. Exclude them with `layers=` or pass `strict=False` to keep them frozen."
        )
    mask = masks.get(mask, **({} if threshold is None else {"threshold": threshold}))
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, bool]] = []

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        convert = type(layer) in MASKED_LAYERS and select(layer)
        if convert:
            config = {k: v for k, v in layer.get_config().items() if k not in _KERNEL_ONLY_KEYS}
            new = MASKED_LAYERS[type(layer)](
                **config,
                mask=mask,
                weight_initializer=weight_initializer,
                score_initializer=score_initializer,
                train_bias=train_bias,
            )
        else:
            new = type(layer).from_config(layer.get_config())
        pairs.append((layer, new, convert))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new, converted in pairs:
        if converted:
            if not reinitialize:
                new.w0.assign(old.kernel)
                if old.bias is not None:
                    new.bias.assign(old.bias)
            continue
        new.set_weights(old.get_weights())
        if is_masked(new):
            continue
        if _has_weights(new):
            new.trainable = train_batchnorm and isinstance(new, _NORMALIZATION)
    return new_model


def to_float32(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (masked or not) whose layers compute in float32.

    A model trained under a ``mixed_bfloat16`` (or ``mixed_float16``) policy gives exactly its
    float32 variables to the copy; the copy is what evaluation and export compare against.
    Layers with any other policy keep it.
    """
    _check_graph_model(model, "to_float32")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        new = type(layer).from_config(_float32_config(layer.get_config()))
        pairs.append((layer, new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return new_model


def fold(model: keras.Model) -> keras.Model:
    """A copy of ``model`` made of stock Keras layers whose kernels are ``w0 * M``.

    The result has no scores, loads without keras_ssm installed, and gives the same outputs
    (masks evaluated in inference mode; a binary mask is ``sigmoid(s) > 0.5``).  It always
    computes in float32, also for a model trained under a mixed-precision policy: its kernels
    are the exact float32 products ``w0 * M``.
    """
    _check_graph_model(model, "fold")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if is_masked(layer):
            new = layer.stock_class.from_config(_float32_config(layer.stock_config()))
        else:
            new = type(layer).from_config(_float32_config(layer.get_config()))
        pairs.append((layer, new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        if is_masked(old):
            weights = [ops.convert_to_numpy(old.kernel)]
            if old.bias is not None:
                weights.append(ops.convert_to_numpy(old.bias))
            new.set_weights(weights)
        else:
            new.set_weights(old.get_weights())
    return new_model
