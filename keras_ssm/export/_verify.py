"""Shared helpers for checking an exported model against its Keras original."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "random_inputs",
    "keras_outputs",
    "max_rel_error",
    "single_input_spec",
]


class ExportVerificationError(RuntimeError):
    """An exported model did not reproduce the Keras model (nothing was written)."""


def single_input_spec(model: keras.Model) -> tuple[tuple[int | None, ...], str]:
    """Return ``(shape, dtype)`` of the model's only input (batch dimension included).

    Raises:
        ValueError: if the model is not built or has more than one input.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "the model must be built with a known input shape (e.g. start it with keras.Input)"
        )
    if len(inputs) != 1:
        raise ValueError(f"only single-input models are supported (got {len(inputs)} inputs)")
    x = inputs[0]
    return tuple(x.shape), str(x.dtype)


def random_inputs(model: keras.Model, batch: int = 3, seed: int = 0) -> np.ndarray:
    """Standard-normal inputs for the model's single input (unknown dims other than batch -> 8)."""
    shape, dtype = single_input_spec(model)
    full = (batch,) + tuple(8 if d is None else int(d) for d in shape[1:])
    rng = np.random.default_rng(seed)
    return rng.standard_normal(full).astype(dtype)


def keras_outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """Run the model in inference mode and return its outputs as a list of arrays."""
    y = model(x, training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in ys]


def max_rel_error(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    """``max|got - want| / max|want|`` over all outputs (absolute error if ``want`` is all 0)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        g = np.asarray(g, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        if g.shape != w.shape or not np.all(np.isfinite(g)):
            return float("inf")
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


class ExportResult:
    """What an export wrote and how closely it matched Keras.

    Attributes:
        path: the file written.
        nbytes: its size.
        max_rel_error: ``max|exported - keras| / max|keras|`` on random inputs (``None`` when
            verification was skipped).
        details: format-specific extras (e.g. the quantized weights).
    """

    def __init__(
        self, path: str, nbytes: int, max_rel_error: float | None, details: dict | None = None
    ) -> None:
        self.path = path
        self.nbytes = nbytes
        self.max_rel_error = max_rel_error
        self.details = details or {}

    def __repr__(self) -> str:
        return (
            f"ExportResult(path={self.path!r}, nbytes={self.nbytes}, "
            f"max_rel_error={self.max_rel_error!r})"
        )
