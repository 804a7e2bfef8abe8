"""Shared helpers for checking an exported model against its Keras original."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "INPUT_SCALES",
    "check_inputs",
    "output_spread",
    "probe_inputs",
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


def random_inputs(
    model: keras.Model, batch: int = 3, seed: int = 0, scale: float = 1.0
) -> np.ndarray:
    """Normal inputs (standard deviation ``scale``) for the model's single input (unknown dims
    other than batch -> 8)."""
    shape, dtype = single_input_spec(model)
    full = (batch,) + tuple(8 if d is None else int(d) for d in shape[1:])
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(full)).astype(dtype)


# Input scales tried, in order, until the model's outputs differ between inputs: 1 first (what
# the checks have always used), then smaller and larger inputs (a model whose softmax or
# activations saturate on unit-scale noise, or one that expects pixel values).
INPUT_SCALES = (1.0, 0.1, 0.01, 10.0, 100.0)


def output_spread(model: keras.Model, x: np.ndarray, step: float = 0.01) -> float:
    """How much ``model``'s outputs move when its inputs ``x`` move a little (by ``step`` times
    their own scale, in random directions), relative to the outputs' size.  0 means the outputs
    are constant or saturated around ``x`` (a one-hot softmax, a dead ReLU net): comparing an
    export's outputs with Keras' there checks nothing about how the file uses its inputs."""
    scale = float(np.std(x)) or 1.0
    noise = np.random.default_rng(12345).standard_normal(x.shape).astype(x.dtype)
    before = keras_outputs(model, x)
    after = keras_outputs(model, (x + step * scale * noise).astype(x.dtype))
    worst = 0.0
    for y0, y1 in zip(before, after, strict=True):
        y0, y1 = np.asarray(y0, np.float64), np.asarray(y1, np.float64)
        if not (np.all(np.isfinite(y0)) and np.all(np.isfinite(y1))):
            continue
        size = float(np.max(np.abs(y0))) or 1.0
        worst = max(worst, float(np.max(np.abs(y1 - y0))) / size)
    return worst


def probe_inputs(
    model: keras.Model, batch: int = 8, seed: int = 0, min_spread: float = 1e-4
) -> tuple[np.ndarray, float, float]:
    """Random inputs around which ``model``'s outputs respond to the inputs (see
    :func:`output_spread`), so that an export checked on them is checked on something that
    depends on how the file computes.

    Returns ``(x, scale, spread)``: the first of :data:`INPUT_SCALES` whose spread is at least
    ``min_spread``; if none is, the one with the largest spread (which tells the caller that the
    check compares near-constants).
    """
    best: tuple[np.ndarray, float, float] | None = None
    for scale in INPUT_SCALES:
        x = random_inputs(model, batch=batch, seed=seed, scale=scale)
        spread = output_spread(model, x)
        if spread >= min_spread:
            return x, scale, spread
        if best is None or spread > best[2]:
            best = (x, scale, spread)
    assert best is not None
    return best


def check_inputs(model: keras.Model, what: str) -> tuple[float, float]:
    """``(input scale, spread)`` for an export's check (see :func:`probe_inputs`), warning when
    the model's outputs hardly depend on its inputs: such a check cannot tell a wrong file from
    a right one."""
    import warnings

    _, scale, spread = probe_inputs(model)
    if spread < 1e-4:
        warnings.warn(
            f"{what} of {model.name!r}: the model's outputs hardly respond to its inputs "
            f"around every random input tried (relative spread {spread:.2g} at input scales "
            f"{', '.join(f'{s:g}' for s in INPUT_SCALES)}), so the export's check compares "
            "near-constant outputs and does not verify the file. The manifest records it "
            "('check_spread').",
            UserWarning,
            stacklevel=3,
        )
    return scale, spread


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
