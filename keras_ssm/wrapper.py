"""Your own layers, masked inside: :class:`SupermaskWrapper` converts the sublayers
:func:`keras_ssm.supermask` chose in place, on the first call and again after every load.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras

from keras_ssm import initializers as ssm_initializers
from keras_ssm import masks
from keras_ssm.layer_tree import UnsupportedLayerError, flat, recreate
from keras_ssm.layers import MASKED_LAYERS
from keras_ssm.norms import ACTIONS, MASK, STATS, apply_role, norm_class

__all__ = ["SupermaskWrapper", "replace_sublayer"]


def replace_sublayer(
    parent: keras.layers.Layer, old: keras.layers.Layer, new: keras.layers.Layer
) -> None:
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
    """Your own layer, with the sublayers :func:`keras_ssm.supermask` chose converted in place.

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
        bad = sorted(set(self.actions.values()) - set(ACTIONS))
        if bad:
            raise ValueError(f"Unknown SupermaskWrapper actions {bad}; allowed: {ACTIONS}.")
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
        layers = flat(self.layer)
        if self.sublayers is not None and len(layers) != self.sublayers:
            raise ValueError(
                f"SupermaskWrapper {self.name!r}: {type(self.layer).__name__} holds "
                f"{len(layers)} layers once built, but it was converted holding {self.sublayers}; "
                "its class changed since (the wrapper names sublayers by their position)."
            )
        parents: dict[int, list[keras.layers.Layer]] = {}
        for layer in layers:
            for child in layer._flatten_layers(include_self=False, recursive=False):
                parents.setdefault(id(child), []).append(layer)
        replaced = []
        for index, role in sorted(self.actions.items()):
            old = layers[index]
            if role == MASK:
                new = self._masked_twin(old)
            elif role == STATS and norm_class(old, role) is not None:
                new = recreate(old, cls=norm_class(old, role))
                new.build_from_config(old.get_build_config())
            else:
                apply_role(old, role)
                continue
            for parent in parents.get(id(old), []):
                replace_sublayer(parent, old, new)
            apply_role(new, role)
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
        return flat(self.layer)

    def unconverted_layer(self, dtype: Any = None) -> keras.layers.Layer:
        """A new copy of the wrapped layer as it was given (stock sublayers, unbuilt), with
        the dtype policy ``dtype`` if given."""
        config = dict(self._layer_config["config"])
        if dtype is not None:
            config["dtype"] = dtype
        return recreate(self.layer, config)

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
