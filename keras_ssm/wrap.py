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
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks
from keras_ssm.layers import MASKED_LAYERS, is_masked

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

BATCHNORM = ("stats", "train", "frozen")
"""``batchnorm`` choices of :func:`supermask` (see there)."""

_NORMALIZATION = tuple(
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
_STATISTICS = (keras.layers.Normalization,)

# Training-only dtype policies: what is deployed (folded, exported, evaluated) computes in float32.
_LOW_PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")

# What supermask does to a layer's own weights (its sublayers have their own roles):
_MASK = "mask"  # a maskable layer, selected: becomes its masked twin
_STATS = "stats"  # a BatchNormalization: batch statistics, moving statistics, fixed gamma/beta
_TRAIN = "train"  # a normalization layer that trains (batchnorm="train")
_FREEZE = "freeze"  # any other layer with weights: they stay as they are, not trainable
_KEEP = "keep"  # an already masked layer: unchanged, its scores train
_PASS = "pass"  # no weights
_GRAPH = "graph"  # a nested Sequential / functional model: converted layer by layer
# Roles that a layer's sublayers carry out one by one, so that layer needs a SupermaskWrapper.
_ACTIVE = (_MASK, _STATS, _TRAIN, _KEEP)
# Roles a SupermaskWrapper applies to the sublayers of the layer it wraps.
_ACTIONS = (_MASK, _STATS, _TRAIN, _FREEZE)


def _float32_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a mixed / half-precision ``dtype`` policy replaced by float32."""
    dtype = config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name in _LOW_PRECISION_POLICIES:
        return {**config, "dtype": "float32"}
    return config


class UnsupportedLayerError(ValueError):
    """A model or layer that :func:`supermask` cannot convert."""


# ----------------------------------------------------------------------------- walking layers
def _children(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The sublayers ``layer`` holds directly (a graph model's layers, without its inputs)."""
    if _is_graph_model(layer):
        found = layer.layers
    else:
        found = layer._flatten_layers(include_self=False, recursive=False)
    return [child for child in found if not isinstance(child, keras.layers.InputLayer)]


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, depth first, each once: the layers of nested models and
    the sublayers of any other layer (your own layers, :class:`SupermaskWrapper`)."""
    seen: set[int] = set()

    def walk(parent: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
        if _is_graph_model(parent):
            children = parent.layers
        else:
            children = parent._flatten_layers(include_self=False, recursive=False)
        for layer in children:
            if id(layer) not in seen:
                seen.add(id(layer))
                yield layer
                yield from walk(layer)

    yield from walk(model)


def masked_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The masked layers of ``model`` (nested models and layers included), in order."""
    return [layer for layer in iter_layers(model) if is_masked(layer)]


def _flat(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and every layer inside it, in Keras' order (``_flatten_layers``): the indices a
    :class:`SupermaskWrapper` names sublayers by."""
    return layer._flatten_layers(include_self=True, recursive=True)


def _own_weights(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The weights ``layer`` created itself (not its sublayers'), in creation order."""
    found: dict[int, keras.Variable] = {}
    for variable in [*layer._trainable_variables, *layer._non_trainable_variables]:
        found.setdefault(id(variable), variable)
    return list(found.values())


def _is_matrix(variable: keras.Variable) -> bool:
    """A float weight with two or more axes longer than 1: a kernel or a table, which a layer
    that supermask cannot mask would leave dense (a per-channel scale or bias is not one)."""
    floating = "float" in str(variable.dtype)
    return floating and sum(int(d) > 1 for d in variable.shape) >= 2


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
            f"subclassed model ({type(model).__name__}). Build it with the functional API (your "
            "own layers may be inside it), or use keras_ssm.layers.MaskedDense / MaskedConv2D "
            "directly inside your class."
        )
    if not model.built:
        raise ValueError(f"{verb}: model {model.name!r} is not built; give it an Input first.")


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


def _recreate(layer: Any, config: dict[str, Any] | None = None, cls: type | None = None) -> Any:
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


def _copy_own_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Assign ``source``'s own weights to ``target``'s (same layer type, or a BatchNormalization
    and its fixed-affine twin)."""
    old, new = _own_weights(source), _own_weights(target)
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


# ----------------------------------------------------------------------------- BatchNorm
@keras.saving.register_keras_serializable(package="keras_ssm", name="FixedAffineBatchNormalization")
class FixedAffineBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` whose ``gamma`` and ``beta`` never train: what
    ``supermask(..., batchnorm="stats")`` (the default) makes of each BatchNormalization.

    In training it normalizes with the batch statistics and updates its moving statistics; at
    inference it uses the moving statistics; its scale and offset keep their values (1 and 0 in a
    fresh model: edge-popup's non-affine BatchNorm).  Same arguments as ``BatchNormalization``;
    setting ``trainable`` leaves gamma and beta frozen.  :func:`fold` gives back the stock layer.
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


def _norm_class(layer: keras.layers.Layer, role: str) -> type | None:
    """The class a normalization layer becomes for ``role`` (``None``: it stays in place)."""
    if role == _STATS and type(layer) is keras.layers.BatchNormalization:
        return FixedAffineBatchNormalization
    if role != _STATS and type(layer) is FixedAffineBatchNormalization:
        return keras.layers.BatchNormalization
    return None


def _freeze_affine(layer: keras.layers.Layer) -> None:
    """``batchnorm="stats"`` on a BatchNormalization subclass that is kept as it is."""
    layer.trainable = True
    for name in ("gamma", "beta"):
        variable = getattr(layer, name, None)
        if isinstance(variable, keras.Variable):
            variable.trainable = False


def _freeze(layer: keras.layers.Layer) -> None:
    """Make ``layer``'s own weights non-trainable: the whole layer if it has no sublayers,
    else its own weights only (its sublayers have their own roles)."""
    if not layer._flatten_layers(include_self=False, recursive=False):
        layer.trainable = False
    else:
        for variable in _own_weights(layer):
            variable.trainable = False


def _apply_role(layer: keras.layers.Layer, role: str) -> None:
    """Set ``layer``'s trainability for ``role`` (after its weights were copied)."""
    if role == _TRAIN:
        layer.trainable = True
    elif role == _STATS:
        if isinstance(layer, FixedAffineBatchNormalization):
            layer.trainable = True
        else:
            _freeze_affine(layer)
    elif role == _FREEZE:
        _freeze(layer)


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
        for child in _children(model):
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
        self.roles[id(layer)] = _PASS  # while its sublayers are visited
        children = _children(layer)
        found = [entry for child in children for entry in self._visit(child, path)]
        if _is_graph_model(layer):
            self.roles[id(layer)] = _GRAPH
            return found
        selected = self.select(layer, path)
        role = self.roles[id(layer)] = self._role(layer, selected)
        if role in (_MASK, _KEEP) or isinstance(layer, (*_NORMALIZATION, *_STATISTICS)):
            return found
        own_kernel = selected and any(map(_is_matrix, _own_weights(layer)))
        here = [(type(layer).__name__, "/".join(path))]
        if any(self.roles[id(c)] in _ACTIVE or id(c) in self.active for c in children):
            self.active.add(id(layer))
            return found + here if own_kernel else found  # its own kernel stays dense
        return here if found or own_kernel else []

    def _role(self, layer: keras.layers.Layer, selected: bool) -> str:
        if is_masked(layer):
            return _KEEP
        if isinstance(layer, _NORMALIZATION):
            if self.batchnorm == "train":
                return _TRAIN
            if self.batchnorm == "stats" and isinstance(layer, keras.layers.BatchNormalization):
                return _STATS
            return _FREEZE
        if type(layer) in MASKED_LAYERS:
            return _MASK if selected else _FREEZE
        return _FREEZE if _own_weights(layer) else _PASS

    def actions(self, layer: keras.layers.Layer) -> dict[int, str]:
        """The roles a :class:`SupermaskWrapper` of ``layer`` applies, by index in ``_flat``."""
        return {
            index: self.roles[id(sub)]
            for index, sub in enumerate(_flat(layer))
            if self.roles.get(id(sub)) in _ACTIONS
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


# ----------------------------------------------------------------------------- the wrapper
def _replace(parent: keras.layers.Layer, old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Put ``new`` where ``parent`` holds ``old``: in its tracked sublayers (same position) and
    in its attributes, lists, dicts and tuples."""
    parent._tracker.replace_tracked_value("layers", old, new)

    def swap(value: Any, depth: int) -> Any:
        if value is old:
            return new
        if depth > 2:
            return value
        if isinstance(value, list):
            for i, item in enumerate(value):
                changed = swap(item, depth + 1)
                if changed is not item:
                    list.__setitem__(value, i, changed)
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                changed = swap(item, depth + 1)
                if changed is not item:
                    dict.__setitem__(value, key, changed)
        elif isinstance(value, tuple):
            items = [swap(item, depth + 1) for item in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        return value

    for name, value in list(vars(parent).items()):
        if name in ("_layers", "_tracker") or name.startswith("__"):
            continue
        changed = swap(value, 0)
        if changed is not value:
            object.__setattr__(parent, name, changed)


@keras.saving.register_keras_serializable(package="keras_ssm", name="SupermaskWrapper")
class SupermaskWrapper(keras.layers.Layer):
    """Your own layer, with the sublayers :func:`supermask` chose converted in place.

    ``supermask`` puts a layer of yours (a ``keras.layers.Layer`` subclass, or a subclassed model
    used as a layer) in this wrapper when Dense/Conv layers (or normalization layers) inside it
    get a role: the wrapper calls it, and on its first call, once it has built its sublayers,
    replaces the chosen ones with their masked twins (where the layer holds them: attributes,
    lists, dicts) and freezes the rest.  Its config holds your layer's config and those choices,
    so a ``.keras`` file (or ``keras.models.clone_model``) makes the same model again; loading
    needs your layer's class, as for any custom layer.  ``layer`` is your layer.

    Args:
        layer: the layer to call.
        actions: ``{index: role}`` for the layers of ``layer._flatten_layers()`` (0 is
            ``layer`` itself): ``"mask"``, ``"stats"`` (a BatchNormalization with fixed
            gamma/beta), ``"train"`` or ``"freeze"`` (its own weights stop training).
        mask, weight_initializer, score_initializer, train_bias: the masked twins' arguments.
        sublayers: how many layers ``layer._flatten_layers()`` gives once built (checked).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        actions: dict[int, str] | Iterable[tuple[int, str]] = (),
        mask: str | dict[str, Any] | masks.Mask = "signed",
        weight_initializer: Any = "elus",
        score_initializer: Any = "glorot_uniform",
        train_bias: bool = False,
        sublayers: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"SupermaskWrapper wraps a keras Layer; received {layer!r}.")
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(autocast=False, **kwargs)
        pairs = actions.items() if isinstance(actions, dict) else actions
        self.actions = {int(index): str(role) for index, role in pairs}
        bad = sorted(set(self.actions.values()) - set(_ACTIONS))
        if bad:
            raise ValueError(f"Unknown SupermaskWrapper actions {bad}; allowed: {_ACTIONS}.")
        self.mask = masks.get(mask)
        self.weight_initializer = ssm_initializers.get(weight_initializer)
        self.score_initializer = ssm_initializers.get(score_initializer)
        self.train_bias = bool(train_bias)
        self.sublayers = None if sublayers is None else int(sublayers)
        # The layer's config as it comes (a layer such as TimeDistributed puts its sublayers'
        # configs in its own, which the conversion changes): what saving and fold recreate.
        self._layer_config = {
            key: value
            for key, value in keras.saving.serialize_keras_object(layer).items()
            if key != "build_config"  # the layer builds when the wrapper first calls it
        }
        self.layer = layer
        self._converted = False

    def build(self, *args: Any, **kwargs: Any) -> None:
        # The wrapped layer builds (and its sublayers are converted) on the first call.
        self.built = True

    def call(self, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        if training is not None:
            kwargs["training"] = training
        if self._converted:
            return self.layer(*args, **kwargs)
        self.layer(*args, **kwargs)  # builds every sublayer, wherever the layer creates it
        replaced = self._convert()
        for old in replaced:
            old._called = False
        outputs = self.layer(*args, **kwargs)
        still = [old.name for old in replaced if old._called]
        if still:
            raise UnsupportedLayerError(
                f"supermask replaced {', '.join(still)} inside {self.layer.name!r} "
                f"({type(self.layer).__name__}), but its call still uses the replaced layers: it "
                "holds them where supermask cannot reach (only attributes, lists, dicts and "
                "tuples of attributes are). Keep your sublayers in such attributes."
            )
        return outputs

    def _convert(self) -> list[keras.layers.Layer]:
        """Carry out the actions on the built layer; returns the layers it replaced."""
        flat = _flat(self.layer)
        if self.sublayers is not None and len(flat) != self.sublayers:
            raise ValueError(
                f"SupermaskWrapper {self.name!r}: {type(self.layer).__name__} holds "
                f"{len(flat)} layers once built, but it was converted holding {self.sublayers}; "
                "its class changed since (the wrapper names sublayers by their position)."
            )
        parents: dict[int, list[keras.layers.Layer]] = {}
        for layer in flat:
            for child in layer._flatten_layers(include_self=False, recursive=False):
                parents.setdefault(id(child), []).append(layer)
        replaced = []
        for index, role in sorted(self.actions.items()):
            old = flat[index]
            if role == _MASK:
                new = self._masked_twin(old)
            elif role == _STATS and _norm_class(old, role) is not None:
                new = _recreate(old, cls=_norm_class(old, role))
                new.build_from_config(old.get_build_config())
            else:
                _apply_role(old, role)
                continue
            for parent in parents.get(id(old), []):
                _replace(parent, old, new)
            _apply_role(new, role)
            replaced.append(old)
        self._converted = True
        return replaced

    def _masked_twin(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        cls = MASKED_LAYERS.get(type(layer))
        if cls is None:
            raise UnsupportedLayerError(
                f"SupermaskWrapper {self.name!r}: sublayer {layer.name!r} is a "
                f"{type(layer).__name__}, which has no masked class in this process; make it "
                "maskable first (keras_ssm.layers.register_maskable), as when it was converted."
            )
        twin = cls.from_stock_config(
            layer.get_config(),
            mask=self.mask,
            weight_initializer=self.weight_initializer,
            score_initializer=self.score_initializer,
            train_bias=self.train_bias,
        )
        build_config = layer.get_build_config()
        if build_config:
            twin.build_from_config(build_config)
        return twin

    def flat_layers(self) -> list[keras.layers.Layer]:
        """The wrapped layer and every layer inside it, by the indices ``actions`` uses."""
        return _flat(self.layer)

    def unconverted_layer(self, dtype: Any = None) -> keras.layers.Layer:
        """A new copy of the wrapped layer as it was given (stock sublayers, unbuilt), with
        the dtype policy ``dtype`` if given."""
        config = dict(self._layer_config["config"])
        if dtype is not None:
            config["dtype"] = dtype
        return _recreate(self.layer, config)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layer": self._layer_config,
            "actions": [[index, role] for index, role in sorted(self.actions.items())],
            "mask": masks.serialize(self.mask),
            "weight_initializer": keras.initializers.serialize(self.weight_initializer),
            "score_initializer": keras.initializers.serialize(self.score_initializer),
            "train_bias": self.train_bias,
            "sublayers": self.sublayers,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> SupermaskWrapper:
        config = dict(config)
        # safe_mode=True is Keras' default; a load_model(..., safe_mode=...) scope still wins.
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects, safe_mode=True
        )
        return cls(layer, **config)


def _paired(
    old: list[keras.layers.Layer], new: list[keras.layers.Layer], layer: keras.layers.Layer
) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """The layers inside ``layer`` (``old``) and inside its copy (``new``), side by side."""
    if len(old) != len(new):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) holds {len(old)} layers but its copy "
            f"holds {len(new)}: the layers it creates depend on more than its config."
        )
    return list(zip(old, new, strict=True))


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

    Every layer that is not masked keeps its weights; by default only the scores train.
    """
    _check_graph_model(model, "supermask")
    batchnorm = _batchnorm_mode(batchnorm, train_batchnorm)
    select, names = _selector(layers)
    plan = _Plan(model, select, batchnorm)
    if names is not None:
        _check_names(names, plan.names)
    if plan.unsupported:
        allowed = ", ".join(cls.__name__ for cls in MASKED_LAYERS)
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
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, str]] = []

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):  # a tensor operation: a + b, x[:, :2]
            return _recreate(layer)
        role = plan.roles[id(layer)]
        if role == _MASK:
            cls = MASKED_LAYERS[type(layer)]
            new = cls.from_stock_config(layer.get_config(), **masked_args)
        elif id(layer) in plan.active:
            new = SupermaskWrapper(
                _recreate(layer),
                actions=plan.actions(layer),
                sublayers=len(_flat(layer)),
                **masked_args,
            )
        else:
            new = _recreate(layer, cls=_norm_class(layer, role))
        pairs.append((layer, new, role))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new, role in pairs:
        if isinstance(new, SupermaskWrapper):
            converted = new.flat_layers()
            for index, (a, b) in enumerate(_paired(_flat(old), converted, old)):
                if new.actions.get(index) != _MASK:
                    _copy_own_weights(a, b)
                elif not reinitialize:
                    b.set_stock_weights(a.get_weights())
        elif role == _MASK:
            if not reinitialize:
                new.set_stock_weights(old.get_weights())
        else:
            new.set_weights(old.get_weights())
            if role in (_TRAIN, _STATS):
                _apply_role(new, role)
            elif role in (_FREEZE, _PASS) and new.weights:
                new.trainable = False  # the whole layer: nothing inside it has a role
    return new_model


def _batchnorm_mode(batchnorm: str | None, train_batchnorm: bool | None) -> str:
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


# ----------------------------------------------------------------------------- copies out
@contextlib.contextmanager
def _float32_global_policy() -> Iterator[None]:
    """A float32 global dtype policy while the copies are made: the sublayers your own layers
    create without a ``dtype`` get the global policy, not their parent's."""
    policy = keras.mixed_precision.global_policy()
    low = policy.name in _LOW_PRECISION_POLICIES
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
    _check_graph_model(model, "to_float32")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            return _recreate(layer)
        config = _float32_config(layer.get_config())
        if isinstance(layer, SupermaskWrapper):
            inner = config["layer"]
            config["layer"] = {**inner, "config": _float32_config(inner["config"])}
        new = _recreate(layer, config)
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
    _check_graph_model(model, "fold")
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def stock(layer: keras.layers.Layer) -> keras.layers.Layer:
        if is_masked(layer):
            return layer.stock_class.from_config(_float32_config(layer.stock_config()))
        if isinstance(layer, SupermaskWrapper):
            dtype = _float32_config(layer._layer_config["config"]).get("dtype")
            return layer.unconverted_layer(dtype)
        fixed = type(layer) is FixedAffineBatchNormalization
        cls = keras.layers.BatchNormalization if fixed else None
        return _recreate(layer, _float32_config(layer.get_config()), cls=cls)

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            return _recreate(layer)
        new = stock(layer)
        pairs.append((layer, new))
        return new

    with _float32_global_policy():
        new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        if isinstance(old, SupermaskWrapper):
            for a, b in _paired(old.flat_layers(), _flat(new), old.layer):
                if is_masked(a):
                    b.set_weights(a.folded_weights())
                else:
                    _copy_own_weights(a, b)
        elif is_masked(old):
            new.set_weights(old.folded_weights())
        else:
            new.set_weights(old.get_weights())
    return new_model
