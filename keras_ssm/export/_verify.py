"""Shared helpers for checking an exported model against its Keras original."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "INPUT_SCALES",
    "InputSpec",
    "as_feed",
    "check_inputs",
    "check_tolerance",
    "input_specs",
    "output_spread",
    "probe_inputs",
    "random_inputs",
    "keras_outputs",
    "sensitivity",
    "max_rel_error",
    "verify_file",
]


class ExportVerificationError(RuntimeError):
    """An exported model did not reproduce the Keras model (nothing was written)."""


class InputSpec(NamedTuple):
    """One input of a model, as the exporters feed it.

    Attributes:
        name: the key that feeds it: the model's input dict key or the ``keras.Input`` name
            (also the ONNX input and LiteRT signature name of a multi-input model).
        shape: its shape, batch dimension included (``None`` where unknown).
        dtype: its dtype name.
        high: for integer and boolean inputs, random inputs are drawn from ``[0, high)``: the
            smallest ``input_dim`` of the embeddings that read it (token or segment ids), or
            ``None`` for an input no embedding reads (a padding mask), which is filled with
            ones. ``None`` for float inputs.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    high: int | None = None


def _input_tensors(model: keras.Model) -> list[Any]:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "the model must be built with a known input shape (e.g. start it with keras.Input)"
        )
    return list(inputs)


def input_specs(model: keras.Model) -> list[InputSpec]:
    """The model's inputs in the order ``model.inputs`` lists them (for a dict of inputs: sorted
    by key, the order ``keras.tree.flatten`` gives), each with the key that feeds it.

    Raises:
        ValueError: if the model is not built with known inputs.
    """
    tensors = _input_tensors(model)
    struct = getattr(model, "input", None) if len(tensors) > 1 else None
    if isinstance(struct, dict):
        names = sorted(struct)
        by_key = [struct[name] for name in names]
        if [id(t) for t in by_key] != [id(t) for t in tensors]:
            names = [t.name for t in tensors]
    else:
        names = [t.name for t in tensors]
    bounds = _embedding_bounds(model, tensors)
    specs = []
    for name, tensor in zip(names, tensors, strict=True):
        dtype = str(tensor.dtype)
        high = bounds.get(id(tensor)) if "int" in dtype or dtype == "bool" else None
        specs.append(InputSpec(name, tuple(tensor.shape), dtype, high))
    return specs


def _embedding_bounds(model: keras.Model, tensors: Sequence[Any]) -> dict[int, int]:
    """``{id(input tensor): smallest input_dim}`` over the embedding layers (any layer with an
    ``input_dim``) that read a model input directly."""
    wanted = {id(t) for t in tensors}
    bounds: dict[int, int] = {}
    for layer in getattr(model, "layers", []):
        dim = getattr(layer, "input_dim", None)
        if not isinstance(dim, int) or dim < 1:
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            for t in keras.tree.flatten(node.arguments.args):
                if id(t) in wanted:
                    bounds[id(t)] = min(dim, bounds.get(id(t), dim))
    return bounds


Inputs = np.ndarray | dict[str, np.ndarray]


def random_inputs(model: keras.Model, batch: int = 3, seed: int = 0, scale: float = 1.0) -> Inputs:
    """Random inputs for ``model`` (unknown dimensions other than batch -> 8): an array for a
    single-input model, else a dict keyed by :attr:`InputSpec.name` (which the model accepts).

    Float inputs are normal with standard deviation ``scale``; integer inputs are uniform in
    ``[0, high)`` (see :class:`InputSpec`), or ones where no embedding bounds them.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in input_specs(model):
        full = (batch,) + tuple(8 if d is None else int(d) for d in spec.shape[1:])
        if "float" in spec.dtype:
            feed[spec.name] = (scale * rng.standard_normal(full)).astype(spec.dtype)
        elif spec.high is None:
            feed[spec.name] = np.ones(full, dtype=spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, spec.high, full).astype(spec.dtype)
    return next(iter(feed.values())) if len(feed) == 1 else feed


def as_feed(x: Inputs, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A runtime's feed dict for ``x`` (:func:`random_inputs`' array or dict): the one array
    under ``names[0]``, or the dict's arrays under their own names."""
    if isinstance(x, dict):
        return {name: x[name] for name in names}
    return {names[0]: x}


# Input scales tried, in order, until the model's outputs differ between inputs: 1 first (what
# the checks have always used), then smaller and larger inputs (a model whose softmax or
# activations saturate on unit-scale noise, or one that expects pixel values).
INPUT_SCALES = (1.0, 0.1, 0.01, 10.0, 100.0)


def _moved(x: Inputs, step: float, move_ints: bool = True) -> Inputs:
    """``x`` moved a little: float inputs by ``step`` times their own scale in random
    directions, integer inputs drawn anew within their range (a token is not a small move, but
    it is what the outputs of a text model should respond to)."""
    rng = np.random.default_rng(12345)

    def move(a: np.ndarray) -> np.ndarray:
        if np.issubdtype(a.dtype, np.floating):
            scale = float(np.std(a)) or 1.0
            return (a + step * scale * rng.standard_normal(a.shape)).astype(a.dtype)
        if not move_ints or a.size == 0 or np.all(a == a.flat[0]):  # a mask of ones stays
            return a
        return rng.integers(0, int(a.max()) + 1, a.shape).astype(a.dtype)

    return {k: move(v) for k, v in x.items()} if isinstance(x, dict) else move(x)


# How far :func:`output_spread` moves float inputs (relative to their own scale).
SPREAD_STEP = 0.01


def check_tolerance(rtol: float, sensitivity: float) -> float:
    """The relative error an export may show against Keras: ``rtol`` times the model's
    ``sensitivity`` (see :func:`sensitivity`: how much a small relative change of its float
    inputs is amplified in its outputs), at least ``rtol``.

    A converted file computes the same function in another order (fused BatchNorm, other
    convolution algorithms), so float32 rounding differs a little in every layer, and a deep
    network amplifies those differences as it amplifies any change of its inputs: measured on
    folded MobileNetV3, ResNet50 and EfficientNetV2 (random init, BatchNorm statistics from one
    batch), ONNX differs from Keras by 1e-5 to 2e-4 at sensitivities of 1 to 76. A conversion
    error (a wrong or missing weight, a layer computed differently) moves the outputs by far
    more."""
    return rtol * max(1.0, sensitivity)


def sensitivity(model: keras.Model, x: Inputs, spread: float | None = None) -> float:
    """How much ``model`` amplifies a small relative change of its float inputs around ``x``:
    the relative output change over the relative input change (:data:`SPREAD_STEP`).  Integer
    inputs (token ids) are left as they are: a different token is not a small change.  0 for a
    model without float inputs.  ``spread``, :func:`output_spread` at ``x`` when known, is that
    change already for a model whose inputs are all float."""
    arrays = list(x.values()) if isinstance(x, dict) else [x]
    floating = [np.issubdtype(a.dtype, np.floating) for a in arrays]
    if not any(floating):
        return 0.0
    if spread is None or not all(floating):
        spread = output_spread(model, x, move_ints=False)
    return spread / SPREAD_STEP


def output_spread(
    model: keras.Model, x: Inputs, step: float = SPREAD_STEP, move_ints: bool = True
) -> float:
    """How much ``model``'s outputs move when its inputs ``x`` move a little (float inputs by
    ``step`` times their own scale, in random directions; integer ids drawn anew), relative to
    the outputs' size.  0 means the outputs are constant or saturated around ``x`` (a one-hot
    softmax, a dead ReLU net): comparing an export's outputs with Keras' there checks nothing
    about how the file uses its inputs."""
    before = keras_outputs(model, x)
    after = keras_outputs(model, _moved(x, step, move_ints))
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
) -> tuple[Inputs, float, float]:
    """Random inputs around which ``model``'s outputs respond to the inputs (see
    :func:`output_spread`), so that an export checked on them is checked on something that
    depends on how the file computes.

    Returns ``(x, scale, spread)``: the first of :data:`INPUT_SCALES` whose spread is at least
    ``min_spread``; if none is, the one with the largest spread (which tells the caller that the
    check compares near-constants).
    """
    best: tuple[Inputs, float, float] | None = None
    for scale in INPUT_SCALES:
        x = random_inputs(model, batch=batch, seed=seed, scale=scale)
        spread = output_spread(model, x)
        if spread >= min_spread:
            return x, scale, spread
        if best is None or spread > best[2]:
            best = (x, scale, spread)
    assert best is not None
    return best


def check_inputs(model: keras.Model, what: str) -> tuple[float, float, float]:
    """``(input scale, spread, sensitivity)`` for an export's check (see :func:`probe_inputs`
    and :func:`sensitivity`), warning when the model's outputs hardly depend on its inputs:
    such a check cannot tell a wrong file from a right one."""
    import warnings

    x, scale, spread = probe_inputs(model)
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
    return scale, spread, sensitivity(model, x, spread)


def verify_file(
    model: keras.Model,
    run: Callable[[Inputs], Sequence[np.ndarray]],
    what: str,
    rtol: float,
    path: str,
) -> tuple[float, dict[str, float]]:
    """Check a written file against ``model``: ``run(x)`` gives the file's outputs, compared
    with Keras' at batch 3 and 1 on inputs the outputs respond to (:func:`check_inputs`),
    within :func:`check_tolerance` of ``rtol``.

    Returns ``(max relative error, details)`` (the check's input scale, spread, sensitivity and
    tolerance).

    Raises:
        ExportVerificationError: naming ``what`` (e.g. ``"ONNX export"``) and ``path``.
    """
    scale, spread, gain = check_inputs(model, what)
    tol = check_tolerance(rtol, gain)
    details = {
        "check_input_scale": scale,
        "check_spread": spread,
        "check_sensitivity": gain,
        "check_tolerance": tol,
    }
    worst = 0.0
    for batch, seed in ((3, 0), (1, 1)):
        x = random_inputs(model, batch=batch, seed=seed, scale=scale)
        err = max_rel_error(run(x), keras_outputs(model, x))
        worst = max(worst, err)
        if not err <= tol:
            raise ExportVerificationError(
                f"{what} of {model.name!r} differs from Keras: max relative error {err:.3g} > "
                f"{tol:g} (batch {batch}); nothing was written to {path!r}"
            )
    return worst, details


def keras_outputs(model: keras.Model, x: Inputs) -> list[np.ndarray]:
    """Run the model in inference mode and return its outputs as a list of arrays (a dict of
    outputs in sorted key order, as ``keras.tree.flatten`` and the exporters give them)."""
    y = model(x, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(y)]


def max_rel_error(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    """``max|got - want| / max|want|`` over all outputs (absolute error if ``want`` is all 0;
    ``inf`` when the outputs differ in number or shape or ``got`` is not finite).

    >>> import numpy as np
    >>> max_rel_error([np.array([1.0, 2.1])], [np.array([1.0, 2.0])])  # doctest: +ELLIPSIS
    0.05...
    >>> max_rel_error([np.array([1.0])], [np.array([1.0, 2.0])])
    inf
    """
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
