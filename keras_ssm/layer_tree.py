"""Layers at any depth: walking a model's layers (nested models, your own layers' sublayers),
recreating a layer from its config, and copying weights between a layer and its copy.

What :mod:`keras_ssm.wrap` (supermask, fold, to_float32) and :mod:`keras_ssm.wrapper` build on.

>>> import keras
>>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="inner")
>>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="out")])
>>> [layer.name for layer in iter_layers(outer)]
['inner', 'd', 'out']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from keras_ssm.layers import is_masked

__all__ = [
    "UnsupportedLayerError",
    "children",
    "copy_own_weights",
    "flat",
    "float32_config",
    "is_graph_model",
    "iter_layers",
    "masked_layers",
    "own_weights",
    "paired",
    "recreate",
]

# Training-only dtype policies: what is deployed (folded, exported, evaluated) computes in float32.
LOW_PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def float32_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a mixed / half-precision ``dtype`` policy replaced by float32."""
    dtype = config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name in LOW_PRECISION_POLICIES:
        return {**config, "dtype": "float32"}
    return config


class UnsupportedLayerError(ValueError):
    """A model or layer that :func:`keras_ssm.supermask` cannot convert (named in the message)."""


def children(layer: keras.layers.Layer, inputs: bool = False) -> list[keras.layers.Layer]:
    """The sublayers ``layer`` holds directly: a graph model's layers (its ``InputLayer``s only
    with ``inputs=True``), any other layer's tracked sublayers."""
    if is_graph_model(layer):
        found = layer.layers
    else:
        found = layer._flatten_layers(include_self=False, recursive=False)
    if inputs:
        return list(found)
    return [child for child in found if not isinstance(child, keras.layers.InputLayer)]


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, depth first, each once: the layers of nested models and
    the sublayers of any other layer (your own layers, :class:`SupermaskWrapper`)."""
    seen: set[int] = set()

    def walk(parent: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
        for layer in children(parent, inputs=True):
            if id(layer) not in seen:
                seen.add(id(layer))
                yield layer
                yield from walk(layer)

    yield from walk(model)


def masked_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The masked layers of ``model`` (nested models and layers included), in order."""
    return [layer for layer in iter_layers(model) if is_masked(layer)]


def flat(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and every layer inside it, in Keras' order (``_flatten_layers``): the indices a
    :class:`SupermaskWrapper` names sublayers by."""
    return layer._flatten_layers(include_self=True, recursive=True)


def own_weights(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The weights ``layer`` created itself (not its sublayers'), in creation order."""
    found: dict[int, keras.Variable] = {}
    for variable in [*layer._trainable_variables, *layer._non_trainable_variables]:
        found.setdefault(id(variable), variable)
    return list(found.values())


def is_matrix(variable: keras.Variable) -> bool:
    """A float weight with two or more axes longer than 1: a kernel or a table, which a layer
    that supermask cannot mask would leave dense (a per-channel scale or bias is not one)."""
    floating = "float" in str(variable.dtype)
    return floating and sum(int(d) > 1 for d in variable.shape) >= 2


def is_graph_model(model: Any) -> bool:
    if isinstance(model, keras.Sequential):
        return True
    return any(cls.__name__ == "Functional" for cls in type(model).__mro__)


def check_graph_model(model: Any, verb: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{verb} expects a keras.Model; received {type(model).__name__}.")
    if not is_graph_model(model):
        raise UnsupportedLayerError(
            f"{verb} supports Sequential and functional models only; {model.name!r} is a "
            f"subclassed model ({type(model).__name__}), whose call is Python code. Call it on a "
            "keras.Input inside a functional model -- inputs = keras.Input(shape); "
            f"{verb}(keras.Model(inputs, {type(model).__name__}(...)(inputs))) -- and every "
            "layer inside it is reached; or use keras_ssm.layers.MaskedDense / MaskedConv2D "
            "directly inside your class."
        )
    if not model.built:
        raise ValueError(f"{verb}: model {model.name!r} is not built; give it an Input first.")


def recreate(layer: Any, config: dict[str, Any] | None = None, cls: type | None = None) -> Any:
    """A new ``layer`` (or tensor operation) from its config, with a clear error if Keras
    cannot make one (a custom layer whose ``get_config`` misses constructor arguments)."""
    cls = type(layer) if cls is None else cls
    try:
        return cls.from_config(layer.get_config() if config is None else config)
    except (NotImplementedError, TypeError, ValueError) as err:
        kind = type(layer).__name__
        raise UnsupportedLayerError(
            f"Cannot recreate layer {layer.name!r} ({kind}) from its config, which supermask, "
            f"fold and saving to a .keras file need: give {kind} a get_config() that returns "
            f"its constructor's arguments. Keras says: {str(err).strip()}"
        ) from err


def copy_own_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Assign ``source``'s own weights to ``target``'s (same layer type, or a BatchNormalization
    and its fixed-affine twin)."""
    old, new = own_weights(source), own_weights(target)
    if len(old) != len(new) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(old, new, strict=True)
    ):
        raise ValueError(
            f"Layer {target.name!r} ({type(target).__name__}) does not hold the weights of "
            f"{source.name!r} ({type(source).__name__}): {[tuple(v.shape) for v in new]} vs "
            f"{[tuple(v.shape) for v in old]}."
        )
    for a, b in zip(old, new, strict=True):
        b.assign(keras.ops.convert_to_numpy(a.value))  # a copy: JAX may free a's buffer


def paired(
    old: list[keras.layers.Layer], new: list[keras.layers.Layer], layer: keras.layers.Layer
) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """The layers inside ``layer`` (``old``) and inside its copy (``new``), side by side."""
    if len(old) != len(new):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) holds {len(old)} layers but its copy "
            f"holds {len(new)}: the layers it creates depend on more than its config."
        )
    return list(zip(old, new, strict=True))
