"""Initializers for the frozen weights ``w0`` (registered with Keras, also usable by string).

>>> import keras, keras_ssm
>>> w = keras.initializers.get("elus")((784, 300))
>>> sorted({round(abs(float(v)), 6) for v in keras.ops.convert_to_numpy(w).ravel()})
[0.061859]

- ``"signed_constant"`` (:class:`SignedConstant`): ``+-c`` with a random sign, ``c`` from the fan.
- ``"elus"`` (:class:`ELUS`): the paper's signed constant, ``c = scale * sqrt(3 / fan_in)``.
- ``"elu_uniform"`` (:class:`ELUUniform`): ``U(+-sqrt(4.5 / fan_in))``, the paper's dense baseline.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

__all__ = ["SignedConstant", "ELUS", "ELUUniform", "compute_fans"]

_FAN_MODES = ("fan_in", "fan_out", "fan_avg")


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a Dense ``(in, out)`` or Conv ``(*kernel, in, out)`` kernel."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> float:
    fan_in, fan_out = compute_fans(shape)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


@keras.saving.register_keras_serializable(package="keras_ssm", name="SignedConstant")
class SignedConstant(keras.initializers.Initializer):
    """Each weight is ``+c`` or ``-c`` with equal probability, ``c = sqrt(scale * gain / fan)``.

    Args:
        scale: multiplies the variance ``gain / fan``.
        mode: which fan: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        gain: the variance numerator (2.0 is He's).
        seed: an int for repeatable draws, ``None`` for Keras' global seed stream.
    """

    def __init__(
        self, scale: float = 1.0, mode: str = "fan_in", gain: float = 2.0, seed: int | None = None
    ) -> None:
        if mode not in _FAN_MODES:
            raise ValueError(f"Unknown mode {mode!r}; allowed: {', '.join(_FAN_MODES)}.")
        for name, value in (("scale", scale), ("gain", gain)):
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"`{name}` must be a positive number; received {value!r}.")
        self.scale, self.mode, self.gain = float(scale), mode, float(gain)
        self.seed = seed
        self._seed_gen = keras.random.SeedGenerator(seed) if seed is None else seed

    def constant(self, shape: tuple[int, ...]) -> float:
        """The magnitude ``c`` every weight of a kernel of ``shape`` gets."""
        return math.sqrt(self.scale * self.gain / _fan(shape, self.mode))

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        dtype = dtype or keras.config.floatx()
        coin = keras.random.uniform(shape, seed=self._seed_gen, dtype=dtype)
        sign = ops.where(ops.less(coin, 0.5), -1.0, 1.0)
        return ops.cast(sign * self.constant(shape), dtype)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "mode": self.mode, "gain": self.gain, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_ssm", name="ELUS")
class ELUS(SignedConstant):
    """The paper's "ELUS" signed constant: ``c = sqrt(scale * 3 / fan_in)`` (``scale=1``).

    The reference configs use He's constant times 1.5, ``sqrt(2 / fan_in) * sqrt(1.5)``
    ``= sqrt(3 / fan_in)``; one stale reference script uses ``sqrt(6 / fan_in)`` (``scale=2``),
    so which constant the paper names ELUS is not certain.  ``scale`` multiplies the variance.
    """

    def __init__(self, scale: float = 1.0, seed: int | None = None) -> None:
        super().__init__(scale=scale, mode="fan_in", gain=3.0, seed=seed)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_ssm", name="ELUUniform")
class ELUUniform(keras.initializers.Initializer):
    """``U(-limit, limit)`` with ``limit = sqrt(scale * 4.5 / fan_in)``: the dense baseline's."""

    def __init__(self, scale: float = 1.0, seed: int | None = None) -> None:
        if not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(f"`scale` must be a positive number; received {scale!r}.")
        self.scale, self.seed = float(scale), seed
        self._seed_gen = keras.random.SeedGenerator(seed) if seed is None else seed

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        limit = math.sqrt(self.scale * 4.5 / _fan(shape, "fan_in"))
        dtype = dtype or keras.config.floatx()
        return keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=self._seed_gen)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "seed": self.seed}


# String ids: keras.initializers.get("elus") resolves through Keras' custom-object registry.
_ALIASES = {"elus": ELUS, "signed_constant": SignedConstant, "elu_uniform": ELUUniform}
keras.saving.get_custom_objects().update(_ALIASES)
ALLOWED = tuple(_ALIASES)


def get(identifier: Any) -> keras.initializers.Initializer:
    """Like ``keras.initializers.get``, with this module's names and a clearer error."""
    if isinstance(identifier, str) and identifier.lower() in _ALIASES:
        return _ALIASES[identifier.lower()]()
    try:
        return keras.initializers.get(identifier)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"Unknown initializer {identifier!r}. Allowed: {', '.join(ALLOWED)}, or any Keras "
            "initializer name, config or instance."
        ) from err
