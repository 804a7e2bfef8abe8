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

What :func:`supermask` takes: a Sequential or functional model, with nested Sequential /
functional models, tensor operations between layers (``a + b``, ``keras.ops.relu(x)``,
``x[:, :16]``) and your own layers (a ``keras.layers.Layer`` subclass, or a subclassed model
used as a layer) holding Dense/Conv layers, in ``__init__`` or in ``build``.  Such a layer comes
back inside a :class:`SupermaskWrapper`, which converts its inner layers in place and does it
again whenever the model is loaded or cloned:

>>> class Block(keras.layers.Layer):
...     def __init__(self, units=4, **kwargs):
...         super().__init__(**kwargs)
...         self.units = units
...         self.inner = keras.layers.Dense(units)
...     def call(self, x):
...         return keras.ops.relu(self.inner(x))
...     def get_config(self):
...         return {**super().get_config(), "units": self.units}
>>> inputs = keras.Input((8,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(Block(name="block")(inputs)))
>>> masked = keras_ssm.supermask(model)
>>> type(masked.get_layer("block")).__name__, type(masked.get_layer("block").layer.inner).__name__
('SupermaskWrapper', 'MaskedDense')
>>> [type(layer).__name__ for layer in keras_ssm.fold(masked).layers[1:]]
['Block', 'Dense']

A top-level subclassed model (whose ``call`` is Python code) cannot be cloned: use the masked
layers inside your class.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras

from keras_ssm import masks
from keras_ssm.graph import chains, is_separable_layer
from keras_ssm.layer_tree import (
    LOW_PRECISION_POLICIES,
    UnsupportedLayerError,
    check_graph_model,
    children,
    copy_own_weights,
    flat,
    float32_config,
    is_graph_model,
    is_matrix,
    iter_layers,
    masked_layers,
    own_weights,
    paired,
    recreate,
)
from keras_ssm.layers import MASKED_LAYERS, is_masked
from keras_ssm.norms import (
    ACTIONS,
    ACTIVE,
    BATCHNORM,
    FREEZE,
    GRAPH,
    KEEP,
    MASK,
    NORMALIZATION,
    PASS,
    STATISTICS,
    STATS,
    TRAIN,
    FixedAffineBatchNormalization,
    apply_role,
    batchnorm_mode,
    norm_class,
)
from keras_ssm.structure import UnitPenalty
from keras_ssm.wrapper import SupermaskWrapper

__all__ = [
    "BATCHNORM",
    "FixedAffineBatchNormalization",
    "SupermaskWrapper",
    "supermask",
    "fold",
    "to_float32",
    "iter_layers",
    "masked_layers",
    "UnsupportedLayerError",
]

LayerFilter = Callable[[keras.layers.Layer], bool] | Iterable[str] | None


def _selector(layers: LayerFilter) -> tuple[Callable[..., bool], set[str] | None]:
    """``select(layer, path)`` for the ``layers`` argument, and the names it gives, if any.

    A name selects the layer of that name and every layer inside it (a nested model, your own
    layer); a function is asked about each layer."""
    if layers is None:
        return (lambda layer, path: True), None
    if callable(layers):
        return (lambda layer, path: bool(layers(layer))), None
    names = {layers} if isinstance(layers, str) else set(layers)
    return (lambda layer, path: any(name in names for name in path)), names


# ----------------------------------------------------------------------------- the plan
class _Plan:
    """What :func:`supermask` does to each layer of a model, at every depth."""

    def __init__(self, model: keras.Model, select: Callable[..., bool], batchnorm: str) -> None:
        self.select = select
        self.batchnorm = batchnorm
        self.roles: dict[int, str] = {}
        self.active: set[int] = set()  # layers with sublayers that have roles of their own
        self.names: list[str] = []
        self.unsupported: dict[str, list[str]] = {}  # layer type -> paths
        for child in children(model):
            for kind, path in self._visit(child, ()):
                self.unsupported.setdefault(kind, []).append(path)

    def _visit(self, layer: keras.layers.Layer, parents: tuple[str, ...]) -> list[tuple[str, str]]:
        """Give ``layer`` and everything inside it a role; ``parents`` are the names of the
        nested models and layers around it.  Returns the layers in it that hold a kernel but
        cannot be masked, as ``(type, path)``: ``layer`` itself for all of them when nothing
        inside it has a role (an LSTM, not its LSTMCell)."""
        if id(layer) in self.roles:
            return []
        path = (*parents, layer.name)
        self.names.append(layer.name)
        self.roles[id(layer)] = PASS  # while its sublayers are visited
        inside = children(layer)
        found = [entry for child in inside for entry in self._visit(child, path)]
        if is_graph_model(layer):
            self.roles[id(layer)] = GRAPH
            return found
        selected = self.select(layer, path)
        role = self.roles[id(layer)] = self._role(layer, selected)
        if role in (MASK, KEEP) or isinstance(layer, (*NORMALIZATION, *STATISTICS)):
            return found
        own_kernel = selected and any(map(is_matrix, own_weights(layer)))
        here = [(type(layer).__name__, "/".join(path))]
        if any(self.roles[id(c)] in ACTIVE or id(c) in self.active for c in inside):
            self.active.add(id(layer))
            return found + here if own_kernel else found  # its own kernel stays dense
        return here if found or own_kernel else []

    def _role(self, layer: keras.layers.Layer, selected: bool) -> str:
        if is_masked(layer):
            return KEEP
        if isinstance(layer, NORMALIZATION):
            if self.batchnorm == "train":
                return TRAIN
            if self.batchnorm == "stats" and isinstance(layer, keras.layers.BatchNormalization):
                return STATS
            return FREEZE
        if type(layer) in MASKED_LAYERS:
            return MASK if selected else FREEZE
        return FREEZE if own_weights(layer) else PASS

    def actions(self, layer: keras.layers.Layer) -> dict[int, str]:
        """The roles a :class:`SupermaskWrapper` of ``layer`` applies, by index in ``flat``."""
        return {
            index: self.roles[id(sub)]
            for index, sub in enumerate(flat(layer))
            if self.roles.get(id(sub)) in ACTIONS
        }


def _describe(groups: dict[str, list[str]]) -> str:
    """``a, b (LSTM); c (GRU)``: layer paths grouped by layer type."""
    return "; ".join(f"{', '.join(paths)} ({kind})" for kind, paths in groups.items())


def _check_names(names: set[str], known: list[str]) -> None:
    unknown = sorted(name for name in names if name not in set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hints.append(f"{name!r} (did you mean {close[0]!r}?)")
        else:
            hints.append(repr(name))
    some = ", ".join(repr(name) for name in list(dict.fromkeys(known))[:8])
    more = f", ... ({len(set(known))} in all)" if len(set(known)) > 8 else ""
    raise ValueError(
        f"supermask(layers=...): no layer is named {', '.join(hints)}. The model's layer names "
        f"are: {some}{more}."
    )


# ----------------------------------------------------------------------------- supermask
def supermask(
    model: keras.Model,
    mask: str | dict[str, Any] | masks.Mask = "signed",
    *,
    threshold: float | None = None,
    weight_initializer: Any = "elus",
    score_initializer: Any = "glorot_uniform",
    layers: LayerFilter = None,
    reinitialize: bool = True,
    batchnorm: str | None = None,
    train_batchnorm: bool | None = None,
    train_bias: bool = False,
    strict: bool = True,
    unit_penalty: float = 0.0,
) -> keras.Model:
    """Clone ``model`` with every Dense/Conv layer (or those ``layers`` selects) masked.

    Args:
        model: a built Sequential or functional model.  Nested Sequential / functional models,
            tensor operations between layers and your own layers holding Dense/Conv layers are
            converted too (see :class:`SupermaskWrapper`).
        mask: the mask for every converted layer (see :func:`keras_ssm.masks.get`).
        threshold: the signed mask's threshold (fraction of the initial max |score|).
        weight_initializer: initializer of the frozen weights ``w0`` when ``reinitialize``.
        score_initializer: initializer of the scores.
        layers: which layers to mask: ``None`` (every maskable layer: the types of
            :data:`keras_ssm.layers.MASKED_LAYERS`), a collection of layer names (a name of a
            nested model or of your own layer selects every layer inside it; a name that matches
            no layer is an error), or a function ``layer -> bool``.
        reinitialize: draw a fresh ``w0`` (the method; default) or keep the model's own kernels
            and biases as ``w0`` (``False``).
        batchnorm: what the normalization layers do:

            - ``"stats"`` (default): each BatchNormalization becomes a
              :class:`FixedAffineBatchNormalization`: it normalizes with the batch statistics in
              training and updates its moving statistics, while gamma and beta stay fixed (so
              only the scores train).  LayerNormalization and the like stay frozen.
            - ``"train"``: normalization layers train: batch statistics, moving statistics, and
              gamma and beta too.
            - ``"frozen"``: the paper's: normalization layers do not train, so a
              BatchNormalization always uses its moving statistics (the initial ones: 0 and 1,
              i.e. ``x / sqrt(1 + epsilon)`` in a fresh model), which breaks deep networks.
        train_batchnorm: the older form of ``batchnorm``: ``True`` is ``"train"``, ``False``
            is ``"frozen"``.
        train_bias: let the converted layers' biases train (default: frozen).
        strict: raise on a selected layer that holds a kernel (a weight with two or more axes)
            but cannot be masked (e.g. an LSTM); with ``False`` such layers stay dense, frozen,
            and one warning lists them.  Layers without kernels (pooling, activations, dropout,
            normalization, per-channel scales) always pass through.
        unit_penalty: structure-aware masks: the strength of
            :class:`keras_ssm.structure.UnitPenalty`, a group penalty on the scores of each
            output unit (filter) that empties whole units, so that ``shrink`` (``ssm export
            --shrink``) removes them and the exported model is narrower and faster.  0 (the
            default) adds none; 0.002-0.003 are the FCN's tested points (0.0025: 97.67% at
            2.23% remaining, 3 seeds; ``examples/paper/RESULTS.md``).
            It goes only on the masked Dense / Conv / SeparableConv layers whose units
            ``shrink`` can remove: those whose output reaches exactly one other such layer
            through per-channel layers (BatchNormalization, pooling, element-wise activations,
            depthwise convolutions, ...); on a separable convolution, on its pointwise scores
            (its units are the pointwise kernel's columns).  A layer that feeds an ``Add`` or a
            ``Concatenate``, a model output, several readers or one of your own layers keeps
            all its units: emptying them there would cost accuracy and save nothing.  The
            penalty replaces the stock layer's ``kernel_regularizer`` (``pointwise_regularizer``
            on a separable convolution), which :func:`supermask` drops in every case.

    Every layer that is not masked keeps its weights; by default only the scores train.

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                           keras.layers.Dense(4, activation="softmax")])
    >>> masked = supermask(model, unit_penalty=0.003)
    >>> [type(layer.score_regularizer).__name__ for layer in masked.layers]  # not the output
    ['UnitPenalty', 'NoneType']
    """
    check_graph_model(model, "supermask")
    penalty = _unit_penalty(unit_penalty)
    batchnorm = batchnorm_mode(batchnorm, train_batchnorm)
    select, names = _selector(layers)
    plan = _Plan(model, select, batchnorm)
    if names is not None:
        _check_names(names, plan.names)
    if plan.unsupported:
        allowed = ", ".join(dict.fromkeys(cls.__name__ for cls in MASKED_LAYERS))
        listed = _describe(plan.unsupported)
        if strict:
            raise UnsupportedLayerError(
                f"supermask cannot mask these layers: {listed}. Maskable layer types: {allowed} "
                "(keras_ssm.layers.register_maskable adds a layer type that keeps its kernel as "
                "Dense does). Exclude them with `layers=` or pass `strict=False` to keep them "
                "dense and frozen."
            )
        warnings.warn(
            f"supermask: these layers hold kernels it cannot mask, so they stay dense and "
            f"frozen: {listed}.",
            UserWarning,
            stacklevel=2,
        )
    mask = masks.get(mask, **({} if threshold is None else {"threshold": threshold}))
    masked_args = {
        "mask": mask,
        "weight_initializer": weight_initializer,
        "score_initializer": score_initializer,
        "train_bias": train_bias,
    }
    # the layers whose units shrink can remove: the producers of channel chains
    penalized: set[int] = set()
    if penalty is not None:
        penalized = {id(c.producer) for c in chains(model, nested=True, separable=True)}
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, str]] = []

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):  # a tensor operation: a + b, x[:, :2]
            return recreate(layer)
        role = plan.roles[id(layer)]
        if role == MASK:
            cls = MASKED_LAYERS[type(layer)]
            units = "pointwise" if is_separable_layer(layer) else "kernel"
            extra = {f"{units}_regularizer": penalty} if id(layer) in penalized else {}
            new = cls.from_stock_config(layer.get_config(), **masked_args, **extra)
        elif id(layer) in plan.active:
            new = SupermaskWrapper(
                recreate(layer),
                actions=plan.actions(layer),
                sublayers=len(flat(layer)),
                **masked_args,
            )
        else:
            new = recreate(layer, cls=norm_class(layer, role))
        pairs.append((layer, new, role))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new, role in pairs:
        if isinstance(new, SupermaskWrapper):
            converted = new.flat_layers()
            for index, (a, b) in enumerate(paired(flat(old), converted, old)):
                if new.actions.get(index) != MASK:
                    copy_own_weights(a, b)
                elif not reinitialize:
                    b.set_stock_weights(a.get_weights())
        elif role == MASK:
            if not reinitialize:
                new.set_stock_weights(old.get_weights())
        else:
            new.set_weights(old.get_weights())
            if role in (TRAIN, STATS):
                apply_role(new, role)
            elif role in (FREEZE, PASS) and new.weights:
                new.trainable = False  # the whole layer: nothing inside it has a role
    return new_model


def _unit_penalty(strength: Any) -> UnitPenalty | None:
    """``supermask``'s ``unit_penalty`` as a regularizer (``None`` for 0), or a clear error."""
    ok = isinstance(strength, (int, float)) and not isinstance(strength, bool)
    if not (ok and math.isfinite(strength) and strength >= 0):
        raise ValueError(
            f"`unit_penalty` must be a finite number >= 0 (0: no penalty); received "
            f"unit_penalty={strength!r}."
        )
    return UnitPenalty(float(strength)) if strength else None


# ----------------------------------------------------------------------------- copies out
@contextlib.contextmanager
def _float32_global_policy() -> Iterator[None]:
    """A float32 global dtype policy while the copies are made: the sublayers your own layers
    create without a ``dtype`` get the global policy, not their parent's."""
    policy = keras.mixed_precision.global_policy()
    low = policy.name in LOW_PRECISION_POLICIES
    if low:
        keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        if low:
            keras.mixed_precision.set_global_policy(policy)


def to_float32(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (masked or not) whose layers compute in float32.

    A model trained under a ``mixed_bfloat16`` (or ``mixed_float16``) policy gives exactly its
    float32 variables to the copy; the copy is what evaluation and export compare against.
    Layers with any other policy keep it.
    """
    check_graph_model(model, "to_float32")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            return recreate(layer)
        config = float32_config(layer.get_config())
        if isinstance(layer, SupermaskWrapper):
            inner = config["layer"]
            config["layer"] = {**inner, "config": float32_config(inner["config"])}
        new = recreate(layer, config)
        pairs.append((layer, new))
        return new

    with _float32_global_policy():
        new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return new_model


def fold(model: keras.Model) -> keras.Model:
    """A copy of ``model`` made of stock Keras layers whose kernels are ``w0 * M``.

    The result has no scores, loads without keras_ssm installed (given the classes of your own
    layers, which come back unwrapped), and gives the same outputs (masks evaluated in inference
    mode; a binary mask is ``sigmoid(s) > 0.5``).  It always computes in float32, also for a
    model trained under a mixed-precision policy: its kernels are the exact float32 products
    ``w0 * M``.  A :class:`FixedAffineBatchNormalization` comes back as a BatchNormalization.
    """
    check_graph_model(model, "fold")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def stock(layer: keras.layers.Layer) -> keras.layers.Layer:
        if is_masked(layer):
            return layer.stock_class.from_config(float32_config(layer.stock_config()))
        if isinstance(layer, SupermaskWrapper):
            dtype = float32_config(layer._layer_config["config"]).get("dtype")
            return layer.unconverted_layer(dtype)
        fixed = type(layer) is FixedAffineBatchNormalization
        cls = keras.layers.BatchNormalization if fixed else None
        return recreate(layer, float32_config(layer.get_config()), cls=cls)

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            return recreate(layer)
        new = stock(layer)
        pairs.append((layer, new))
        return new

    with _float32_global_policy():
        new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        if isinstance(old, SupermaskWrapper):
            for a, b in paired(old.flat_layers(), flat(new), old.layer):
                if is_masked(a):
                    b.set_weights(a.folded_weights())
                else:
                    copy_own_weights(a, b)
        elif is_masked(old):
            new.set_weights(old.folded_weights())
        else:
            new.set_weights(old.get_weights())
    return new_model
