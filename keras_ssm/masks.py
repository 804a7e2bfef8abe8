"""The method itself: mask step functions with straight-through gradients.

A mask turns a layer's real-valued ``scores`` into the mask ``M`` that multiplies the frozen
weights ``w0``.  Each mask is a small serializable object; a layer asks it once to ``build`` its
per-layer state (for example the signed mask's threshold) and then calls it on every forward pass.

>>> import keras
>>> from keras_ssm import masks
>>> mask = masks.get("signed")
>>> mask.values
(-1, 0, 1)
>>> masks.get({"class_name": "topk", "config": {"k": 0.3}}).k
0.3

Three masks ship with the library:

- ``"signed"`` (:class:`SignedMask`, the paper's): keep (+1), hide (0) or invert (-1).
- ``"binary"`` (:class:`BinaryMask`, Zhou et al. 2019): a Bernoulli sample in training.
- ``"topk"`` (:class:`TopKMask`, Ramanujan et al. 2020, "edge-popup"): keep the top ``k`` share.

Your own mask: subclass :class:`Mask`, give it a ``name`` and register it with :func:`register`.
It is then usable by name wherever a mask is (layers, ``supermask``, configs), and a ``.keras``
file using it loads in any process that imports the module registering it, just like a Keras
custom object.  ``ALLOWED`` lists the names registered so far.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import keras
from keras import ops

__all__ = [
    "Mask",
    "SignedMask",
    "BinaryMask",
    "TopKMask",
    "get",
    "serialize",
    "register",
    "straight_through",
    "read",
    "ALLOWED",
]


def straight_through(step: Callable[[Any], Any], scores: Any) -> Any:
    """Apply ``step`` to ``scores`` with the identity as its gradient (dL/ds = dL/dM).

    ``step`` may close over tensors (never over Keras variables: read them first), which get
    no gradient.  Written with ``keras.ops.custom_gradient`` so it runs on TensorFlow and JAX.
    """

    @ops.custom_gradient
    def _step(x: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            return args[0] if upstream is None else upstream

        return step(x), grad

    return _step(scores)


def read(value: Any) -> Any:
    """A tensor holding ``value``'s current value (a Keras variable must never reach a custom
    gradient function directly: on TensorFlow it would be watched as a variable there)."""
    return ops.copy(value) if isinstance(value, keras.Variable) else ops.convert_to_tensor(value)


def _as_fraction(name: str, value: Any, *, closed_upper: bool = False) -> float:
    upper = "1]" if closed_upper else "1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and 0.0 < float(value) and (float(value) <= 1.0 if closed_upper else float(value) < 1.0)
    if not ok:
        raise ValueError(f"`{name}` must be a number in (0, {upper}; received {name}={value!r}.")
    return float(value)


class Mask:
    """Base class: a step function from scores to mask values, with a custom gradient.

    Subclasses set ``name`` (the string id) and ``values`` (the mask values it can produce) and
    implement ``__call__``; ``build`` creates per-layer state on the layer that owns the scores.
    ``get_config`` returns the constructor's arguments (the default ``from_config`` passes them
    back).  Register a subclass with :func:`register` to use it by name and to save it.
    """

    name: ClassVar[str] = ""
    values: ClassVar[tuple[int, ...]] = ()

    def build(self, layer: keras.layers.Layer, scores: keras.Variable) -> dict[str, Any]:
        """Create the per-layer state (variables, seed generators) on ``layer``."""
        return {}

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Mask:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.get_config().items()))))


class _ThresholdOfScores(keras.initializers.Initializer):
    """Initial value of the signed mask's ``tau``: ``threshold * max|s|`` of the initial scores.

    Keras calls an initializer when it gives a variable its value, and it gives the variables of
    a layer their values in the order they were created, so the scores have theirs by then:
    right away when a layer is built eagerly, and after the trace when Keras builds a layer
    symbolically (a functional model's construction, a subclassed model's first ``fit``, JAX's
    deferred initialization), where the scores have no value yet when ``build`` runs.  The
    product is the Python float ``threshold * max|s|`` rounded once to the variable's dtype
    (what a ``Constant`` initializer stores).
    """

    def __init__(self, threshold: float, scores: keras.Variable) -> None:
        self.threshold = threshold
        self.scores = scores

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        peak = ops.max(ops.abs(self.scores.value))
        try:
            value = self.threshold * float(ops.convert_to_numpy(peak))
        except (NotImplementedError, TypeError, ValueError):
            # A symbolic peak: Keras wants a placeholder for tau while it traces the layer (its
            # shape and dtype are what count); tau gets its value after the trace.
            return ops.cast(peak * self.threshold, dtype) * ops.ones(shape, dtype=dtype)
        return keras.initializers.Constant(value)(shape, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        # Keras never saves a variable's initializer: tau's value is saved with the layer.
        return {"threshold": self.threshold}


class SignedMask(Mask):
    """Keep (+1), hide (0) or invert (-1) each weight: the signed supermask.

    ``M = +1 if s > tau, 0 if |s| <= tau, -1 if s < -tau`` with ``tau = threshold * max|s|`` of
    the layer's *initial* scores.  ``tau`` is fixed once when the layer is built and stored as a
    non-trainable variable (so it saves and loads).  Gradient: ``dL/ds = dL/dM``.

    >>> from keras import ops
    >>> mask = SignedMask(threshold=0.4)
    >>> ops.convert_to_numpy(mask(ops.array([-1.0, -0.2, 0.3, 0.9]), {"tau": 0.5})).tolist()
    [-1.0, 0.0, 0.0, 1.0]
    """

    name = "signed"
    values = (-1, 0, 1)

    def __init__(self, threshold: float = 0.4) -> None:
        self.threshold = _as_fraction("threshold", threshold)

    def build(self, layer: keras.layers.Layer, scores: keras.Variable) -> dict[str, Any]:
        var = layer.add_weight(
            name="tau",
            shape=(),
            initializer=_ThresholdOfScores(self.threshold, scores),
            trainable=False,
            autocast=False,  # compared with the float32 scores, never a bfloat16 copy
        )
        return {"tau": var}

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        tau = ops.cast(read(state["tau"]), scores.dtype)

        def step(s: Any) -> Any:
            # NaN compares false both ways: a NaN score is hidden (tests/test_bad_input.py)
            return ops.cast(ops.greater(s, tau), s.dtype) - ops.cast(ops.less(s, -tau), s.dtype)

        return straight_through(step, scores)

    def get_config(self) -> dict[str, Any]:
        return {"threshold": self.threshold}


class BinaryMask(Mask):
    """Zhou et al.'s supermask: keep (1) or hide (0) with probability ``sigmoid(s)``.

    In training ``M ~ Bernoulli(sigmoid(s))`` with the estimator
    ``sample + sigmoid(s) - stop_gradient(sigmoid(s))`` (so ``dL/ds = dL/dM * sigmoid'(s)``),
    sampled from a Keras ``SeedGenerator`` so it runs on TensorFlow and JAX.  **At inference the
    mask is deterministic: ``M = 1`` where ``sigmoid(s) > 0.5`` (``s > 0``)**; this is also what
    ``fold`` and ``mask_stats`` report.

    Args:
        seed: seed of the layer's sampling stream (``None``: drawn from Keras' global seed, so
            ``keras.utils.set_random_seed`` makes runs repeatable).
    """

    name = "binary"
    values = (0, 1)

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None; received seed={seed!r}.")
        self.seed = seed

    def build(self, layer: keras.layers.Layer, scores: keras.Variable) -> dict[str, Any]:
        layer.mask_seed_generator = keras.random.SeedGenerator(self.seed, name="mask_seed")
        return {"seed_generator": layer.mask_seed_generator}

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        if not training:
            return ops.cast(ops.greater(scores, 0.0), scores.dtype)
        prob = ops.sigmoid(scores)
        noise = keras.random.uniform(ops.shape(scores), seed=state["seed_generator"])
        sample = ops.cast(ops.less(noise, prob), scores.dtype)
        return sample + prob - ops.stop_gradient(prob)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


class TopKMask(Mask):
    """Edge-popup: keep (1) the top ``k`` share of ``|s|`` in each layer, hide (0) the rest.

    Ties at the cut are kept.  Gradient: straight-through, ``dL/ds = dL/dM``.

    >>> from keras import ops
    >>> ops.convert_to_numpy(TopKMask(k=0.5)(ops.array([0.1, -3.0, 2.0, 0.2]), {})).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """

    name = "topk"
    values = (0, 1)

    def __init__(self, k: float = 0.5) -> None:
        self.k = _as_fraction("k", k, closed_upper=True)

    def __call__(self, scores: Any, state: dict[str, Any], training: bool | None = None) -> Any:
        size = 1
        for dim in scores.shape:
            size *= int(dim)
        keep = max(1, int(round(self.k * size)))

        def step(s: Any) -> Any:
            magnitude = ops.abs(s)
            cut = ops.top_k(ops.reshape(magnitude, (-1,)), keep, sorted=True)[0][keep - 1]
            return ops.cast(ops.greater_equal(magnitude, cut), s.dtype)

        return straight_through(step, scores)

    def get_config(self) -> dict[str, Any]:
        return {"k": self.k}


# The registry: lower-cased mask name -> class (the built-in masks first, then in registration
# order).  The package under which :func:`register` also registers each mask with Keras.
_REGISTRY: dict[str, type[Mask]] = {}
_KERAS_PACKAGE = "keras_ssm.masks"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_M = TypeVar("_M", bound=Mask)

# ``ALLOWED``: the registered mask names, a tuple computed on each access (module ``__getattr__``)
# so it includes the masks registered after import.
ALLOWED: tuple[str, ...]


def __getattr__(name: str) -> Any:
    if name == "ALLOWED":
        return _allowed()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _allowed() -> tuple[str, ...]:
    return tuple(cls.name for cls in _REGISTRY.values())


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type[_M]) -> type[_M]:
    """Register the :class:`Mask` subclass ``cls`` under its ``name``; returns ``cls``.

    Use it as a class decorator (or call it).  A registered mask resolves by name in :func:`get`,
    hence in the masked layers, in ``keras_ssm.supermask`` and in saved configs, and it is listed
    in :data:`ALLOWED`.  It is registered with Keras too, as ``"keras_ssm.masks>" + name``, so
    ``keras.saving.serialize_keras_object`` / ``deserialize_keras_object`` handle its instances.

    A masked layer saves its mask as ``{"class_name": name, "config": mask.get_config()}``, so a
    ``.keras`` file loads in any process that has imported the module registering the mask first,
    just like a Keras custom object.  For a single load,
    ``keras.saving.load_model(path, custom_objects={name: cls})`` works as well.

    Names are case-insensitive ids: letters, digits, ``_``, ``.`` and ``-``, starting with a
    letter.  Registering a class again does nothing, and a class defined again under the same
    module and qualified name (a reloaded module, a re-run notebook cell) replaces the earlier
    definition; any other clash raises ``ValueError``.

    >>> from keras import ops
    >>> from keras_ssm import masks
    >>> @masks.register
    ... class MarginMask(masks.Mask):
    ...     '''Keep (1) the weights whose score exceeds ``margin``, hide (0) the rest.'''
    ...     name = "margin"
    ...     values = (0, 1)
    ...     def __init__(self, margin=0.0):
    ...         self.margin = float(margin)
    ...     def __call__(self, scores, state, training=None):
    ...         step = lambda s: ops.cast(ops.greater(s, self.margin), s.dtype)
    ...         return masks.straight_through(step, scores)
    ...     def get_config(self):
    ...         return {"margin": self.margin}
    >>> masks.get("margin", margin=0.2)
    MarginMask(margin=0.2)
    >>> masks.serialize(MarginMask(0.2))
    {'class_name': 'margin', 'config': {'margin': 0.2}}
    >>> masks.ALLOWED[:3], "margin" in masks.ALLOWED
    (('signed', 'binary', 'topk'), True)
    >>> masks.register(masks.SignedMask) is masks.SignedMask   # already registered: a no-op
    True
    >>> class OtherSigned(masks.SignedMask):                   # inherits name = "signed"
    ...     pass
    >>> masks.register(OtherSigned)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Cannot register mask class OtherSigned as 'signed': that name is taken by ...
    """
    if not (isinstance(cls, type) and issubclass(cls, Mask)) or cls is Mask:
        what = "the base class Mask itself" if cls is Mask else repr(cls)
        raise ValueError(
            "keras_ssm.masks.register expects a subclass of keras_ssm.masks.Mask (a class that "
            f"sets `name` and `values` and implements `__call__`); received {what}."
        )
    name = cls.__dict__.get("name", cls.name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"Cannot register mask class {cls.__qualname__}: its `name` is {name!r}. Set the "
            "class attribute `name` to a non-empty id of letters, digits, '_', '.' or '-' that "
            "starts with a letter, e.g. name = 'my_mask'."
        )
    key = name.lower()
    taken = _REGISTRY.get(key)
    if taken is not None and taken is not cls and _qualified(taken) != _qualified(cls):
        raise ValueError(
            f"Cannot register mask class {cls.__qualname__} as {name!r}: that name is taken by "
            f"{_qualified(taken)}. Give {cls.__qualname__} its own `name`; the taken names "
            f"are: {', '.join(_allowed())}."
        )
    _REGISTRY[key] = cls
    keras.saving.register_keras_serializable(package=_KERAS_PACKAGE, name=name)(cls)
    return cls


for _builtin in (SignedMask, BinaryMask, TopKMask):
    register(_builtin)
del _builtin


def serialize(mask: Mask) -> dict[str, Any]:
    """The JSON-able config of ``mask``: ``{"class_name": name, "config": {...}}``.

    ``mask``'s class must be the one registered under its ``name`` (see :func:`register`): any
    other config would not load back, or would load as another mask, so it raises ``ValueError``.

    >>> serialize(SignedMask(0.3))
    {'class_name': 'signed', 'config': {'threshold': 0.3}}
    """
    if not isinstance(mask, Mask):
        raise ValueError(f"Expected a keras_ssm.masks.Mask instance; received {mask!r}.")
    found = _find(mask.name)
    if found is not type(mask):
        taken = "" if found is None else f" (that name belongs to {_qualified(found)})"
        raise ValueError(
            f"Cannot serialize {mask!r}: its class {_qualified(type(mask))} is not registered "
            f"as mask {mask.name!r}{taken}, so a saved model could not load it. Give the class "
            "its own `name` and decorate it with @keras_ssm.masks.register."
        )
    return {"class_name": mask.name, "config": mask.get_config()}


def get(identifier: str | dict[str, Any] | Mask, **overrides: Any) -> Mask:
    """Resolve a mask from a string id, a config dict (see :func:`serialize`) or an instance.

    ``overrides`` (e.g. ``threshold=0.5``) are merged into the config of a string or dict id; an
    argument the mask does not take raises a ``ValueError`` that names the mask's arguments.
    Names resolve among the registered masks (:func:`register`), then among Keras' custom
    objects (``custom_objects`` given to ``keras.saving.load_model``, a
    ``keras.saving.custom_object_scope``, or a Keras registered name such as
    ``"keras_ssm.masks>signed"``).
    """
    if isinstance(identifier, Mask):
        if overrides:
            config = {**identifier.get_config(), **overrides}
            return _construct(type(identifier), config)
        return identifier
    if isinstance(identifier, str):
        cls, config = _lookup(identifier), {}
    elif isinstance(identifier, dict) and "class_name" in identifier:
        # A Keras `serialize_keras_object` dict names the class by its `registered_name`.
        name = identifier.get("registered_name") or identifier["class_name"]
        cls, config = _lookup(name), dict(identifier.get("config") or {})
    else:
        raise ValueError(
            f"Could not interpret mask identifier {identifier!r}: expected one of {_allowed()}, "
            "a dict {'class_name': ..., 'config': {...}} or a keras_ssm.masks.Mask instance."
        )
    return _construct(cls, {**config, **overrides})


def _find(name: Any) -> type[Mask] | None:
    """The mask class registered as ``name``, or found among Keras' custom objects, or None."""
    if not isinstance(name, str) or not name:
        return None
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        found = keras.saving.get_registered_object(name)
        if isinstance(found, type) and issubclass(found, Mask):
            cls = found
    return cls


def _lookup(name: str) -> type[Mask]:
    cls = _find(name)
    if cls is None:
        raise ValueError(
            f"Unknown mask {name!r}. Allowed masks: {', '.join(_allowed())}. A custom Mask "
            "subclass must be registered with @keras_ssm.masks.register (its module imported) "
            "before it is used or loaded."
        )
    return cls


def _arguments(cls: type[Mask]) -> str:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return "unknown"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return ", ".join(p.name for p in params if p.kind not in variadic) or "none"


def _construct(cls: type[Mask], config: dict[str, Any]) -> Mask:
    try:
        return cls(**config)
    except TypeError as err:
        raise ValueError(
            f"Mask {cls.name!r} got unexpected arguments {sorted(config)}; "
            f"its arguments are: {_arguments(cls)}."
        ) from err
