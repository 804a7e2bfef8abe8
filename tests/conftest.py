"""Shared fixtures: backend-agnostic gradients, seeding, tiny models."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)


def grad(fn: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """d fn(x) / dx for a scalar-valued ``fn`` of a tensor, on the active backend."""
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v))(keras.ops.convert_to_tensor(x)))
    import tensorflow as tf

    value = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(value)
        out = fn(value)
    return tape.gradient(out, value).numpy()


def layer_grads(
    layer: keras.layers.Layer, x: np.ndarray, loss: Callable[[Any], Any]
) -> dict[str, np.ndarray]:
    """Gradients of ``loss(layer(x, training=True))`` w.r.t. each trainable variable, by path."""
    kwargs = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def f(tv: list[Any]) -> Any:
            out, _ = layer.stateless_call(tv, non_trainable, x, **kwargs)
            return loss(out)

        grads = jax.grad(f)(trainable)
        return {
            v.path: np.asarray(g) for v, g in zip(layer.trainable_variables, grads, strict=True)
        }
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = loss(layer(x, **kwargs))
    grads = tape.gradient(out, [v.value for v in layer.trainable_variables])
    return {v.path: g.numpy() for v, g in zip(layer.trainable_variables, grads, strict=True)}


def numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))
