"""The layer-graph walk shared by :mod:`keras_ssm.analysis` and :mod:`keras_ssm.export.shrink`.

A *chain* is a Dense / Conv layer (the *producer*), the layers its output then flows through
that act on every channel on its own (the *path*), and the next Dense / Conv layer (the
*consumer*), where every tensor on the way has exactly one reader (no branch, no model output)
and every layer on it is called once, on one input.  Along a chain the producer's unit ``c``
reaches the consumer only at the consumer's input positions ``positions(path, C)[:, c]``: a
unit none of whose positions the consumer reads cannot change anything downstream.
:func:`keras_ssm.analysis.model_stats` counts such units as dead; ``shrink`` removes them.

A layer on a path must act per channel: :func:`channel_kind` names how (``None`` for every
layer that mixes channels or that this module does not know, which ends a chain).  That is why
LayerNormalization, Softmax and a softmax Activation never pass: their output on every channel
depends on all channels, so a unit the consumer ignores still changes the others.  For the
same reason the producer's own activation must be element-wise.

>>> import keras
>>> from keras_ssm import graph
>>> L = keras.layers
>>> model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3, name="conv"),
...     L.BatchNormalization(name="bn"), L.MaxPooling2D(name="pool"), L.Flatten(name="flat"),
...     L.Dense(5, name="fc"), L.Softmax(name="softmax"), L.Dense(3, name="out")])
>>> [(c.producer.name, [la.name for la in c.path], c.consumer.name)
...  for c in graph.chains(model)]
[('conv', ['bn', 'pool', 'flat'], 'fc')]
>>> graph.positions(graph.chains(model)[0].path, 4)[:2]     # Flatten: channels-last order
array([[0, 1, 2, 3],
       [4, 5, 6, 7]])
>>> graph.channel_kind(model.get_layer("bn")), graph.channel_kind(model.get_layer("softmax"))
('affine', None)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from keras_ssm.layer_tree import iter_layers

__all__ = [
    "AFFINE",
    "Chain",
    "DEPTHWISE",
    "ELEMENTWISE",
    "ELEMENTWISE_ACTIVATIONS",
    "FLATTEN",
    "IDENTITY",
    "PADDING",
    "POOLING",
    "activation_name",
    "chains",
    "channel_kind",
    "has_elementwise_activation",
    "is_kernel_layer",
    "is_separable_layer",
    "positions",
]

# Activations computed element by element (output[i] depends on input[i] only).
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "elu",
        "selu",
        "celu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "silu",
        "swish",
        "hard_silu",
        "hard_swish",
        "exponential",
        "leaky_relu",
        "mish",
        "log_sigmoid",
        "hard_tanh",
        "squareplus",
        "sparse_plus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
    }
)

# The kinds of per-channel layers (what :func:`channel_kind` returns); each keeps channel ``c``
# of its output a function of channel ``c`` of its input alone.
IDENTITY = "identity"  # the identity at inference: dropout, noise, regularisers
ELEMENTWISE = "elementwise"  # f(x) element by element: activations (PReLU: alpha per element)
AFFINE = "affine"  # a scale and shift per channel: BatchNormalization over the last axis
POOLING = "pooling"  # pooling within each channel: a constant channel stays that constant
PADDING = "padding"  # zero padding: the channel stays, a constant one gains a zero border
FLATTEN = "flatten"  # channels-last flatten: channel c of position p lands at p * C + c
DEPTHWISE = "depthwise"  # a depthwise convolution (one filter per channel, multiplier 1)

_L = keras.layers
_KINDS: dict[type, str] = {
    **dict.fromkeys(
        (
            _L.Dropout,
            _L.SpatialDropout1D,
            _L.SpatialDropout2D,
            _L.SpatialDropout3D,
            _L.GaussianNoise,
            _L.GaussianDropout,
            _L.AlphaDropout,
            _L.ActivityRegularization,
            _L.Identity,
        ),
        IDENTITY,
    ),
    **dict.fromkeys((_L.ReLU, _L.ELU, _L.LeakyReLU, _L.PReLU, _L.Activation), ELEMENTWISE),
    _L.BatchNormalization: AFFINE,
    **dict.fromkeys(
        (
            _L.MaxPooling1D,
            _L.MaxPooling2D,
            _L.MaxPooling3D,
            _L.AveragePooling1D,
            _L.AveragePooling2D,
            _L.AveragePooling3D,
            _L.GlobalAveragePooling1D,
            _L.GlobalAveragePooling2D,
            _L.GlobalAveragePooling3D,
            _L.GlobalMaxPooling1D,
            _L.GlobalMaxPooling2D,
            _L.GlobalMaxPooling3D,
        ),
        POOLING,
    ),
    **dict.fromkeys((_L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D), PADDING),
    _L.Flatten: FLATTEN,
    **dict.fromkeys((_L.DepthwiseConv1D, _L.DepthwiseConv2D), DEPTHWISE),
}
_KERNEL_LAYERS = (_L.Dense, _L.Conv1D, _L.Conv2D, _L.Conv3D)
_SEPARABLE_LAYERS = (_L.SeparableConv1D, _L.SeparableConv2D)


def activation_name(activation: Any) -> str | None:
    """The registered name of an activation function (``None`` for an unnamed callable)."""
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _channels_last(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _last_axis(layer: keras.layers.Layer, axis: Any) -> bool:
    if axis == -1:
        return True
    try:
        return isinstance(axis, int) and axis == len(layer.input.shape) - 1
    except (AttributeError, ValueError):  # never called: the rank is unknown
        return False


def channel_kind(layer: keras.layers.Layer) -> str | None:
    """How ``layer`` acts per channel (:data:`IDENTITY`, :data:`ELEMENTWISE`, :data:`AFFINE`,
    :data:`POOLING`, :data:`PADDING`, :data:`FLATTEN`, :data:`DEPTHWISE`), or ``None`` when it
    mixes channels or is not known to act per channel: such a layer ends a chain.

    The class must match exactly (a subclass may compute something else), an ``Activation``
    must be element-wise, a BatchNormalization must normalise the last axis, pooling, padding,
    Flatten and depthwise convolutions must be channels-last, and a depthwise convolution must
    have one filter per channel and an element-wise activation.

    >>> import keras
    >>> channel_kind(keras.layers.Activation("relu")), channel_kind(keras.layers.Softmax())
    ('elementwise', None)
    """
    kind = _KINDS.get(type(layer))
    if kind is None:
        return None
    if type(layer) is _L.Activation:
        return kind if activation_name(layer.activation) in ELEMENTWISE_ACTIVATIONS else None
    if kind == AFFINE:
        return kind if _last_axis(layer, layer.axis) else None
    if kind in (POOLING, PADDING, FLATTEN):
        return kind if _channels_last(layer) else None
    if kind == DEPTHWISE:
        quant = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
        plain = quant is None and not getattr(layer, "lora_enabled", False)
        ok = plain and layer.depth_multiplier == 1 and _channels_last(layer)
        return kind if ok and has_elementwise_activation(layer) else None
    return kind


def is_kernel_layer(layer: keras.layers.Layer) -> bool:
    """A Dense / Conv layer, stock or masked, whose kernel's input axis (``-2``) reads the last
    axis of its input: the layers a chain starts and ends at (they mix channels)."""
    return (
        isinstance(layer, _KERNEL_LAYERS)
        and getattr(layer, "groups", 1) == 1
        and _channels_last(layer)
    )


def is_separable_layer(layer: keras.layers.Layer) -> bool:
    """A channels-last separable convolution (a depthwise kernel per input channel, then a
    pointwise kernel that mixes them): it ends a chain like a Dense / Conv layer, and
    ``chains(..., separable=True)`` lets it be a producer and a consumer too."""
    return isinstance(layer, _SEPARABLE_LAYERS) and _channels_last(layer)


def has_elementwise_activation(layer: keras.layers.Layer) -> bool:
    """Whether a Dense / Conv layer's own activation keeps its units apart (not softmax)."""
    return activation_name(getattr(layer, "activation", None)) in ELEMENTWISE_ACTIVATIONS


@dataclass(frozen=True)
class Chain:
    """``producer -> *path -> consumer``; see the module's docstring."""

    producer: keras.layers.Layer
    path: tuple[keras.layers.Layer, ...]
    consumer: keras.layers.Layer

    def names(self) -> tuple[str, tuple[str, ...], str]:
        """``(producer, path, consumer)`` by layer name."""
        return self.producer.name, tuple(la.name for la in self.path), self.consumer.name


def _is_graph_model(layer: Any) -> bool:
    if isinstance(layer, keras.Sequential):
        return True
    return any(cls.__name__ == "Functional" for cls in type(layer).__mro__)


def _edges(model: keras.Model) -> tuple[dict[int, list[Any]], dict[int, int]]:
    """``(readers, arity)`` of one Sequential / functional model's own graph, by layer id.

    ``readers[id]``: the layers reading the layer's output, one entry per read, ``None`` for a
    model output.  ``arity[id]``: the number of input tensors of the layer's call, absent for a
    layer called more than once in this graph (a shared layer).
    """
    readers: dict[int, list[Any]] = defaultdict(list)
    arity: dict[int, int] = {}
    calls: Counter[int] = Counter()
    if isinstance(model, keras.Sequential):  # its layers, in order (robust to add / pop)
        layers = list(model.layers)
        for previous, layer in zip([None, *layers], layers, strict=False):
            calls[id(layer)] += 1
            arity[id(layer)] = 1
            if previous is not None:
                readers[id(previous)].append(layer)
        if layers:
            readers[id(layers[-1])].append(None)
        outputs = []
    else:
        outputs = keras.tree.flatten(model.outputs)
    seen: set[int] = set()
    stack = [tensor._keras_history for tensor in outputs]
    while stack:  # back from the outputs: only this graph's nodes, whoever else uses a layer
        operation, node_index = stack.pop()[:2]
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        calls[id(operation)] += 1
        arity[id(operation)] = len(node.input_tensors)
        for tensor in node.input_tensors:
            readers[id(tensor._keras_history[0])].append(operation)
            stack.append(tensor._keras_history)
    for tensor in outputs:
        readers[id(tensor._keras_history[0])].append(None)
    for key, count in calls.items():
        if count > 1:
            del arity[key]
    return readers, arity


def _single_reader(
    layer: keras.layers.Layer, readers: dict[int, list[Any]], arity: dict[int, int]
) -> keras.layers.Layer | None:
    """The one layer reading ``layer``'s output, when it is read once (and is no model output)
    by a layer called once, on that input alone."""
    found = readers[id(layer)]
    if len(found) != 1 or found[0] is None or arity.get(id(found[0])) != 1:
        return None
    return found[0]


def chains(
    model: keras.Model,
    accept: Callable[[keras.layers.Layer], bool] | None = None,
    *,
    nested: bool = False,
    separable: bool = False,
) -> list[Chain]:
    """Every chain of a Sequential or functional model, in the order of its producers.

    ``accept`` restricts the Dense / Conv layers that may be a producer or a consumer (a
    rejected one still ends a chain); ``nested=True`` also walks every nested Sequential /
    functional model on its own (a chain never crosses a model's boundary); ``separable=True``
    lets separable convolutions (:func:`is_separable_layer`) be producers and consumers as well
    (they always end a chain).  Other models (subclassed ones) have no chains.
    """

    def mixing(layer: keras.layers.Layer) -> bool:
        return is_kernel_layer(layer) or (separable and is_separable_layer(layer))

    models = [model]
    if nested:
        models += [layer for layer in iter_layers(model) if isinstance(layer, keras.Model)]
    found = []
    for graph_model in models:
        if not _is_graph_model(graph_model):
            continue
        readers, arity = _edges(graph_model)
        for producer in graph_model.layers:
            if not (
                mixing(producer)
                and (accept is None or accept(producer))
                and arity.get(id(producer)) == 1
                and has_elementwise_activation(producer)
            ):
                continue
            path: list[keras.layers.Layer] = []
            current = _single_reader(producer, readers, arity)
            while current is not None and not mixing(current):
                if channel_kind(current) is None:
                    current = None
                    break
                path.append(current)
                current = _single_reader(current, readers, arity)
            if current is not None and (accept is None or accept(current)):
                found.append(Chain(producer, tuple(path), current))
    return found


def positions(path: Sequence[keras.layers.Layer], channels: int) -> np.ndarray | None:
    """Where the producer's channels land after ``path``: ``idx[p, c]`` is the position on the
    last axis of the path's output (the consumer's input axis) of channel ``c`` at spatial
    position ``p`` (one row, ``p = 0``, without a Flatten).  ``None`` when a Flatten's input has
    an unknown size.

    >>> import keras
    >>> flatten = keras.layers.Flatten()
    >>> _ = flatten(keras.Input((2, 3)))                  # 2 positions x 3 channels
    >>> positions([flatten], 3).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    idx = np.arange(channels)[None, :]
    for layer in path:
        if type(layer) is _L.Flatten:
            spatial = layer.input.shape[1:-1]
            if any(d is None for d in spatial):
                return None
            count = int(np.prod(spatial, dtype=np.int64))
            width = idx.size
            idx = (np.arange(count)[:, None, None] * width + idx[None]).reshape(-1, channels)
    return idx
