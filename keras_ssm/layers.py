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
from typing import Any

import keras

from keras_ssm.masked_base import (
    KERNEL_ARGS,
    MaskedLayerBase,
    MaskedLayerMixin,
    MaskedPart,
    stock_signature,
)

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
        missing = [arg for arg in KERNEL_ARGS if arg not in init]
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
    cls.__signature__ = stock_signature(stock)
    return keras.saving.register_keras_serializable(package=_KERAS_PACKAGE, name=name)(cls)


MaskedDense = register_maskable(keras.layers.Dense)
MaskedConv1D = register_maskable(keras.layers.Conv1D)
MaskedConv2D = register_maskable(keras.layers.Conv2D)
MaskedConv3D = register_maskable(keras.layers.Conv3D)
MaskedEinsumDense = register_maskable(keras.layers.EinsumDense)


def is_masked(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a masked layer (of this module or of :mod:`keras_ssm.layers_more`)."""
    return isinstance(layer, MaskedLayerBase)
