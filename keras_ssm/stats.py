"""What a mask does: per-layer counts, a printed summary, and a training callback.

>>> import keras, keras_ssm
>>> model = keras.Sequential([keras.Input((20,)), keras_ssm.layers.MaskedDense(10)])
>>> stats = keras_ssm.mask_stats(model)
>>> sorted(stats["layers"][0])
['class', 'hidden', 'inverted', 'kept', 'name', 'remaining', 'total']
>>> 0.0 < stats["remaining"] < 1.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_ssm.wrap import iter_layers, masked_layers

__all__ = [
    "MaskStatsCallback",
    "mask_array",
    "mask_stats",
    "sign_counts",
    "summary",
    "ternary_entropy_bits",
    "with_totals",
]

# The counts every mask_stats row carries (besides ``name`` and ``class``).
_ROW_KEYS = ("total", "kept", "inverted", "hidden", "remaining")


def mask_array(layer: keras.layers.Layer, weight: str | None = None) -> np.ndarray:
    """A masked layer's mask as numpy, in inference mode (what ``fold`` multiplies in).

    ``weight`` names one of the masked weights of a layer that masks several (a SeparableConv's
    ``depthwise_kernel`` and ``pointwise_kernel``; see ``layer.masked_parts()``)."""
    values = layer.compute_mask_values(training=False, weight=weight)
    return np.asarray(keras.ops.convert_to_numpy(values))


def _counts(total: int, kept: int, inverted: int) -> dict[str, Any]:
    nonzero = kept + inverted
    return {
        "total": total,
        "kept": kept,
        "inverted": inverted,
        "hidden": total - nonzero,
        "remaining": nonzero / total,
        "flipped": inverted / nonzero if nonzero else 0.0,
    }


def sign_counts(mask: np.ndarray) -> dict[str, Any]:
    """The one mask counter behind :func:`mask_stats`, :func:`with_totals` and
    :func:`keras_ssm.analysis.mask_counts`.

    Returns ``total`` (entries), ``kept`` (+1), ``inverted`` (-1), ``hidden`` (0),
    ``remaining`` (the non-zero share) and ``flipped`` (the inverted share of the non-zero
    entries; 0 when none remains).

    >>> counts = sign_counts(np.array([[1, 0, -1], [0, 0, 1]]))
    >>> [counts[k] for k in ("total", "kept", "inverted", "hidden", "remaining", "flipped")]
    [6, 2, 1, 3, 0.5, 0.3333333333333333]
    """
    m = np.asarray(mask)
    return _counts(int(m.size), int(np.sum(m > 0)), int(np.sum(m < 0)))


def mask_stats(model: keras.Model) -> dict[str, Any]:
    """Per-layer mask counts and the share of weights that remain.

    Returns a dict with ``"layers"`` (one row per masked layer: ``name``, ``class``, ``total``,
    ``kept`` (+1), ``inverted`` (-1), ``hidden`` (0), ``remaining``), the same counts summed over
    all masked layers, ``"remaining"`` (the fraction in [0, 1] of non-zero mask entries: the
    paper's "remaining weights") and ``"flipped"`` (the share of remaining weights whose sign is
    inverted relative to ``w0``).  A model without masked layers raises ``ValueError``.
    """
    rows = []
    for layer in masked_layers(model):
        # every mask of the layer (a SeparableConv has two), counted together
        parts = [mask_array(layer, part.weight).ravel() for part in layer.masked_parts()]
        counts = sign_counts(np.concatenate(parts))
        rows.append(
            {"name": layer.name, "class": type(layer).__name__, **{k: counts[k] for k in _ROW_KEYS}}
        )
    if not rows:
        raise ValueError(f"Model {model.name!r} has no masked layers; see keras_ssm.supermask().")
    return with_totals(rows)


def with_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"layers": rows}`` plus the counts summed over the rows (``total``, ``kept``,
    ``inverted``, ``hidden``), ``remaining`` and ``flipped``, as :func:`sign_counts` defines
    them."""
    totals = _counts(*(sum(row[key] for row in rows) for key in ("total", "kept", "inverted")))
    return {"layers": rows, **totals}


def ternary_entropy_bits(kept: int, inverted: int, hidden: int) -> float:
    """Bits needed to store a mask with these counts at its empirical entropy (the limit)."""
    total = kept + inverted + hidden
    probs = [count / total for count in (kept, inverted, hidden) if count]
    return total * -sum(p * math.log2(p) for p in probs)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def summary(model: keras.Model, print_fn: Callable[[str], Any] | None = None) -> str:
    """Print (and return) a per-layer table of what the masks keep, like larq's summary.

    Columns: mask entries, remaining and inverted shares, bits per weight of the folded
    ternary form at its entropy (plus 32 bits for the layer's scale), its size in bytes, and the
    compression against fp32.  Layers without masks that hold weights are listed as fp32.
    """
    overall = mask_stats(model)
    stats = {row["name"]: row for row in overall["layers"]}
    header = ("Layer", "Type", "Params", "Remaining", "Inverted", "Bits/w", "Ternary", "x fp32")
    lines: list[tuple[str, ...]] = []
    total_params = total_bits = 0.0
    for layer in iter_layers(model):
        if layer.name in stats:
            row = stats[layer.name]
            bias_variable = getattr(layer, "bias", None)  # Embedding has none
            bias = 0 if bias_variable is None else int(np.prod(bias_variable.shape))
            # the ternary mask at its entropy, one fp32 scale, and the bias (fp32)
            bits = ternary_entropy_bits(row["kept"], row["inverted"], row["hidden"]) + 32 * (
                1 + bias
            )
            params = row["total"] + bias
            cells = (
                f"{row['remaining']:.2%}",
                f"{row['inverted'] / row['total']:.2%}",
                f"{bits / params:.3f}",
            )
        elif layer.weights and not hasattr(layer, "layers"):
            params = sum(int(np.prod(w.shape)) for w in layer.weights)
            bits = 32.0 * params
            cells = ("-", "-", "32 (fp32)")
        else:
            continue
        total_params += params
        total_bits += bits
        lines.append(
            (
                layer.name,
                type(layer).__name__,
                f"{params:,}",
                *cells,
                _fmt_bytes(bits / 8),
                f"{32 * params / bits:.1f}x",
            )
        )
    lines.append(
        (
            "Total",
            "",
            f"{int(total_params):,}",
            f"{overall['remaining']:.2%}",
            f"{overall['inverted'] / overall['total']:.2%}",
            f"{total_bits / total_params:.3f}",
            _fmt_bytes(total_bits / 8),
            f"{32 * total_params / total_bits:.1f}x",
        )
    )
    widths = [max(len(str(r[i])) for r in (header, *lines)) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "-" * len(fmt(header))
    text = "\n".join(
        [
            f"keras_ssm summary: {model.name}",
            rule,
            fmt(header),
            rule,
            *map(fmt, lines[:-1]),
            rule,
            fmt(lines[-1]),
            rule,
            f"fp32 size {_fmt_bytes(4 * total_params)}; "
            f"ternary at entropy {_fmt_bytes(total_bits / 8)}; "
            f"flipped signs among remaining weights: {overall['flipped']:.2%}",
        ]
    )
    (print_fn or print)(text)
    return text


class MaskStatsCallback(keras.callbacks.Callback):
    """Adds ``remaining`` and ``flipped`` (see :func:`mask_stats`) to the logs every epoch.

    They land in ``model.fit``'s ``History`` and, when this callback is listed *before*
    ``keras.callbacks.TensorBoard``, in TensorBoard.  ``per_layer=True`` also logs
    ``remaining/<layer name>``.

    >>> import numpy as np, keras, keras_ssm
    >>> model = keras.Sequential([keras.Input((4,)), keras_ssm.layers.MaskedDense(2)])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, verbose=0,
    ...                     callbacks=[keras_ssm.MaskStatsCallback()])
    >>> sorted(history.history)
    ['flipped', 'loss', 'remaining']
    """

    def __init__(self, per_layer: bool = False) -> None:
        super().__init__()
        self.per_layer = per_layer

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        stats = mask_stats(self.model)
        logs["remaining"] = stats["remaining"]
        logs["flipped"] = stats["flipped"]
        if self.per_layer:
            for row in stats["layers"]:
                logs[f"remaining/{row['name']}"] = row["remaining"]
