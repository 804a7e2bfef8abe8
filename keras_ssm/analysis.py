"""Which weights matter: per-layer keep / hide / invert statistics and a recorder callback.

Everything here is numpy on top of the masked layers' public surface (``w0``, ``scores``,
``mask_state`` and ``compute_mask_values``); plotting lives in :mod:`keras_ssm.plots` (imported
lazily, so ``import keras_ssm`` never imports matplotlib).

>>> import numpy as np
>>> from keras_ssm import analysis
>>> M = np.array([[1, 0], [0, 0], [-1, 0]])        # 3 inputs -> 2 units (a Dense kernel)
>>> row = analysis.mask_counts(M, w0=np.ones((3, 2)))
>>> row["kept"], row["hidden"], row["inverted"], row["no_incoming"], row["no_outgoing"]
(1, 4, 1, 1, 1)

The statistics of a whole model (one row per masked layer):

>>> import keras, keras_ssm
>>> model = keras.Sequential([keras.Input((12,)), keras_ssm.layers.MaskedDense(4),
...                           keras_ssm.layers.MaskedDense(2)])
>>> stats = analysis.model_stats(model)
>>> [row["units"] for row in stats["layers"]], 0 < stats["remaining"] < 1
([4, 2], True)

During training, :class:`MaskRecorder` appends the same statistics for every epoch to
``RUN_DIR/analysis.jsonl`` (``ssm report`` plots their evolution).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_ssm.atomic import atomic_write_text
from keras_ssm.graph import Chain, chains, positions
from keras_ssm.layers import is_masked
from keras_ssm.stats import mask_array, sign_counts, with_totals
from keras_ssm.wrap import masked_layers

__all__ = [
    "ANALYSIS_FILE",
    "MaskRecorder",
    "conv_maps",
    "flatten_records",
    "input_map",
    "layer_arrays",
    "layer_stats",
    "mask_counts",
    "masked_weights",
    "model_stats",
    "read_records",
]

ANALYSIS_FILE = "analysis.jsonl"


# ----------------------------------------------------------------------------- arrays
def masked_weights(model: keras.Model) -> list[tuple[str, keras.layers.Layer, str]]:
    """Every masked weight of ``model`` as ``(row name, layer, weight)``, in layer order.

    A layer that masks one weight gives one row named like the layer; one that masks several
    (a SeparableConv's ``depthwise_kernel`` and ``pointwise_kernel``) gives one row each, named
    ``"<layer>/<weight>"``.  The statistics, the recorder and ``ssm report`` count per row.

    >>> import keras, keras_ssm
    >>> from keras_ssm.layers_more import MaskedSeparableConv2D
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), MaskedSeparableConv2D(4, 3, name="sep"),
    ...     keras.layers.Flatten(), keras_ssm.layers.MaskedDense(2, name="out")])
    >>> [name for name, _, _ in masked_weights(model)]
    ['sep/depthwise_kernel', 'sep/pointwise_kernel', 'out']
    """
    return [
        (_row_name(layer, part.weight), layer, part.weight)
        for layer in masked_layers(model)
        for part in layer.masked_parts()
    ]


def _row_name(layer: keras.layers.Layer, weight: str | None) -> str:
    if weight is None or len(layer.masked_parts()) == 1:
        return layer.name
    return f"{layer.name}/{weight}"


def layer_arrays(layer: keras.layers.Layer, weight: str | None = None) -> dict[str, Any]:
    """A masked layer's arrays as numpy: ``mask`` (inference mode), ``w0``, ``scores``, ``tau``.

    ``tau`` is the signed mask's threshold (``None`` for masks without one).  ``weight`` names
    one masked weight of a layer that masks several (see :func:`masked_weights`).

    >>> import keras, keras_ssm
    >>> layer = keras_ssm.layers.MaskedDense(3)
    >>> _ = layer(keras.ops.ones((1, 4)))
    >>> arrays = layer_arrays(layer)
    >>> arrays["mask"].shape, arrays["tau"] > 0
    ((4, 3), True)
    """
    mask = mask_array(layer, weight)  # a clear error for a missing or unknown weight
    parts = layer.masked_parts()
    part = parts[0] if weight is None else next(p for p in parts if p.weight == weight)
    tau = part.mask_state.get("tau") if isinstance(part.mask_state, dict) else None
    return {
        "mask": mask,
        "w0": np.asarray(keras.ops.convert_to_numpy(part.w0)),
        "scores": np.asarray(keras.ops.convert_to_numpy(part.scores)),
        "tau": None if tau is None else float(keras.ops.convert_to_numpy(tau)),
    }


def mask_counts(mask: np.ndarray, w0: np.ndarray | None = None) -> dict[str, Any]:
    """Keep / hide / invert counts of one kernel-shaped mask, and the units it cuts off.

    The kernel layout is Keras': ``(inputs, units)`` for Dense and ``(*kernel_size, inputs,
    units)`` for Conv, so a *unit* is an output neuron or filter and an *input* a feature or
    input channel.

    Returns ``total``, ``kept`` (+1), ``hidden`` (0), ``inverted`` (-1), their fractions
    (``kept_frac``, ``hidden_frac``, ``inverted_frac``), ``remaining`` (non-zero share),
    ``flipped`` (share of the remaining weights whose sign is inverted relative to ``w0``),
    ``units`` / ``no_incoming`` (units none of whose incoming weights remain: their
    pre-activation is constant), ``inputs`` / ``no_outgoing`` (inputs from which no weight of
    this layer remains: for the first layer, pixels the network ignores).  With ``w0``, also
    ``positive`` / ``negative``: remaining weights whose effective value ``w0 * M`` is > 0 / < 0.

    >>> counts = mask_counts(np.array([[1, -1], [0, 0]]), w0=np.array([[0.5, 0.5], [1, 1]]))
    >>> counts["remaining"], counts["flipped"], counts["positive"], counts["no_outgoing"]
    (0.5, 0.5, 1, 1)
    """
    m = np.asarray(mask)
    if m.ndim < 2:
        raise ValueError(f"expected a kernel-shaped mask (>= 2 axes); got shape {m.shape}")
    counts = sign_counts(m)  # total, kept, hidden, inverted, remaining, flipped
    alive = m != 0
    into_units = alive.reshape(-1, m.shape[-1]).any(axis=0)  # any weight into unit j
    from_inputs = np.moveaxis(alive, -2, 0).reshape(m.shape[-2], -1).any(axis=1)
    row: dict[str, Any] = {
        "shape": list(m.shape),
        **counts,
        **{f"{k}_frac": counts[k] / counts["total"] for k in ("kept", "hidden", "inverted")},
        "units": int(m.shape[-1]),
        "no_incoming": int(np.sum(~into_units)),
        "inputs": int(m.shape[-2]),
        "no_outgoing": int(np.sum(~from_inputs)),
    }
    if w0 is not None:
        effective = np.sign(np.asarray(w0)) * np.sign(m)
        row["positive"] = int(np.sum(effective > 0))
        row["negative"] = int(np.sum(effective < 0))
    return row


def layer_stats(layer: keras.layers.Layer, weight: str | None = None) -> dict[str, Any]:
    """:func:`mask_counts` of a masked layer (or of its masked ``weight``, see
    :func:`masked_weights`) plus ``name``, ``class`` and ``tau``.

    >>> import keras, keras_ssm
    >>> layer = keras_ssm.layers.MaskedDense(3)
    >>> _ = layer(keras.ops.ones((1, 4)))
    >>> row = layer_stats(layer)
    >>> row["name"] == layer.name, row["kept"] + row["hidden"] + row["inverted"]
    (True, 12)
    """
    arrays = layer_arrays(layer, weight)
    row = {"name": _row_name(layer, weight), "class": type(layer).__name__, "tau": arrays["tau"]}
    row.update(mask_counts(arrays["mask"], arrays["w0"]))
    return row


# ----------------------------------------------------------------------------- graph
def _chains(model: keras.Model) -> list[Chain]:
    """The chains :func:`model_stats` reads: between masked layers, nested models included."""
    return chains(model, is_masked, nested=True)


def _feeds(
    chain_path: Sequence[keras.layers.Layer], unit_count: int, consumer_mask: np.ndarray
) -> np.ndarray | None:
    """Per unit of a producer with ``unit_count`` units: does the consumer at the end of its
    chain (:func:`keras_ssm.graph.chains`) keep any weight from it?  ``None`` when the consumer's
    inputs do not map onto the units."""
    idx = positions(chain_path, unit_count)
    alive = np.moveaxis(consumer_mask != 0, -2, 0)
    rows = alive.reshape(alive.shape[0], -1).any(axis=1)  # per consumer input
    if idx is None or rows.size != idx.size:
        return None
    return rows[idx].any(axis=0)


def model_stats(model: keras.Model) -> dict[str, Any]:
    """:func:`layer_stats` of every masked layer, the totals, and dead units.

    Each row also gets ``no_outgoing_units`` (this layer's units from which the next masked
    layer keeps no weight, through per-channel layers only: the chains of
    :func:`keras_ssm.graph.chains`; ``None`` where there is no such chain, e.g. the output
    layer, a residual addition, a LayerNormalization or softmax in between) and ``dead_units``
    (units with no incoming or no outgoing weight: they cannot affect the output).  Totals:
    ``total``, ``kept``, ``hidden``, ``inverted``, ``remaining`` and ``flipped``, as
    :func:`keras_ssm.mask_stats` defines them (one counter: :func:`keras_ssm.stats.sign_counts`).

    >>> import keras, keras_ssm
    >>> model = keras.Sequential([keras.Input((6,)), keras_ssm.layers.MaskedDense(3)])
    >>> sorted(model_stats(model))
    ['flipped', 'hidden', 'inverted', 'kept', 'layers', 'remaining', 'total']
    """
    weights = masked_weights(model)
    if not weights:
        raise ValueError(f"Model {model.name!r} has no masked layers; see keras_ssm.supermask().")
    arrays = {(id(layer), weight): layer_arrays(layer, weight) for _, layer, weight in weights}
    chain_of = {id(c.producer): c for c in _chains(model)}
    rows = []
    for name, layer, weight in weights:
        a = arrays[(id(layer), weight)]
        row: dict[str, Any] = {"name": name, "class": type(layer).__name__, "tau": a["tau"]}
        row.update(mask_counts(a["mask"], a["w0"]))
        chain = chain_of.get(id(layer))  # chains run between one-weight Dense / Conv layers
        feeds = None
        if chain is not None:
            consumer = arrays[(id(chain.consumer), chain.consumer.masked_parts()[0].weight)]
            feeds = _feeds(chain.path, row["units"], consumer["mask"])
        row["no_outgoing_units"] = None if feeds is None else int(np.sum(~feeds))
        m = a["mask"] != 0
        dead = ~m.reshape(-1, m.shape[-1]).any(axis=0)
        if feeds is not None:
            dead = dead | ~feeds
        row["dead_units"] = int(np.sum(dead))
        rows.append(row)
    return with_totals(rows)


# ----------------------------------------------------------------------------- maps
def input_map(model: keras.Model) -> dict[str, Any] | None:
    """How many remaining weights leave each input feature of the first masked layer.

    For a Dense first layer reading the flattened input (the FCN on MNIST), the counts are
    reshaped to the image (channels summed): ``remaining``, ``kept``, ``inverted``, ``positive``
    and ``negative`` (effective weight ``w0 * M`` > 0 / < 0), each of shape ``(H, W)`` (or the
    input's own shape when it is not an image), plus ``units`` (the most a feature can have)
    and ``layer``.  ``None`` when the first masked layer is not a Dense layer over the whole
    input (a conv layer: see :func:`conv_maps`).

    >>> import keras, keras_ssm
    >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                           keras_ssm.layers.MaskedDense(5)])
    >>> maps = input_map(model)
    >>> maps["remaining"].shape, int(maps["remaining"].max()) <= maps["units"]
    ((4, 4), True)
    """
    weights = masked_weights(model)
    if not weights:
        return None
    _, first, weight = weights[0]
    a = layer_arrays(first, weight)
    if a["mask"].ndim != 2:
        return None
    in_shape = tuple(int(d) for d in model.inputs[0].shape[1:]) if model.inputs else ()
    if not in_shape or int(np.prod(in_shape)) != a["mask"].shape[0]:
        return None
    sign = np.sign(a["mask"])
    effective = sign * np.sign(a["w0"])

    def per_input(selected: np.ndarray) -> np.ndarray:
        counts = selected.sum(axis=1).reshape(in_shape).astype(np.int64)
        return counts.sum(axis=-1) if counts.ndim == 3 else counts

    return {
        "layer": first.name,
        "units": int(a["mask"].shape[1]),
        "remaining": per_input(sign != 0),
        "kept": per_input(sign > 0),
        "inverted": per_input(sign < 0),
        "positive": per_input(effective > 0),
        "negative": per_input(effective < 0),
    }


def conv_maps(layer: keras.layers.Layer, weight: str | None = None) -> dict[str, Any]:
    """Where a conv layer's remaining weights are: per filter and per kernel position
    (``weight`` names one masked weight of a layer that masks several).

    Returns ``per_filter`` (remaining share of each output filter, shape ``(filters,)``),
    ``per_position`` (remaining share at each kernel position, shape ``kernel_size``),
    ``inverted_per_position`` (inverted share of the remaining weights there) and ``name``.

    >>> import keras, keras_ssm
    >>> layer = keras_ssm.layers.MaskedConv2D(4, 3)
    >>> _ = layer(keras.ops.ones((1, 8, 8, 2)))
    >>> maps = conv_maps(layer)
    >>> maps["per_filter"].shape, maps["per_position"].shape
    ((4,), (3, 3))
    """
    mask = layer_arrays(layer, weight)["mask"]
    if mask.ndim < 3:
        raise ValueError(f"{layer.name!r} is not a conv layer (kernel shape {mask.shape})")
    alive = mask != 0
    spatial = tuple(range(mask.ndim - 2))
    per_position = alive.mean(axis=(-2, -1))
    inverted = (mask < 0).sum(axis=(-2, -1))
    nonzero = alive.sum(axis=(-2, -1))
    return {
        "name": _row_name(layer, weight),
        "per_filter": alive.mean(axis=(*spatial, mask.ndim - 2)),
        "per_position": per_position,
        "inverted_per_position": np.divide(
            inverted, nonzero, out=np.zeros(nonzero.shape, dtype=float), where=nonzero > 0
        ),
    }


# ----------------------------------------------------------------------------- recorder
def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of an ``analysis.jsonl`` file (or of ``RUN_DIR/analysis.jsonl``).

    Returns ``[]`` when the file does not exist; a line that is not JSON raises ``ValueError``
    naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ANALYSIS_FILE
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from err
    return records


_LAYER_KEYS = (
    "name",
    "class",
    "total",
    "kept",
    "hidden",
    "inverted",
    "remaining",
    "flipped",
    "units",
    "no_incoming",
    "inputs",
    "no_outgoing",
    "no_outgoing_units",
    "dead_units",
)


class MaskRecorder(keras.callbacks.Callback):
    """Records :func:`model_stats` every epoch into ``RUN_DIR/analysis.jsonl``.

    One JSON line per record: ``epoch`` (epochs completed; a line for epoch 0, the masks before
    training, is written when training starts), ``logs`` (the epoch's metrics), ``remaining``,
    ``flipped``, ``changed`` (share of mask entries that changed since the previous line) and
    ``layers`` (per masked layer: counts, ``remaining``, ``flipped``, ``changed``,
    ``no_incoming``, ``no_outgoing``, ``dead_units``...).  The whole file is rewritten through a
    temporary file and a rename, so it is always complete.  A resumed run
    (``keras.callbacks.BackupAndRestore``) keeps the lines up to the epoch it resumes from.

    >>> import tempfile, numpy as np, keras, keras_ssm
    >>> from keras_ssm.analysis import MaskRecorder, read_records
    >>> model = keras.Sequential([keras.Input((4,)), keras_ssm.layers.MaskedDense(2)])
    >>> model.compile("sgd", "mse")
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, verbose=0,
    ...               callbacks=[MaskRecorder(run_dir)])
    >>> [r["epoch"] for r in read_records(run_dir)]
    [0, 1, 2]
    """

    def __init__(self, run_dir: str | os.PathLike[str], filename: str = ANALYSIS_FILE) -> None:
        super().__init__()
        self.path = Path(run_dir) / filename
        self.records: list[dict[str, Any]] = []
        self._previous: dict[str, np.ndarray] = {}

    def _record(self, epoch: int, logs: dict[str, Any] | None) -> dict[str, Any]:
        stats = model_stats(self.model)
        masks = {
            name: layer_arrays(layer, weight)["mask"]
            for name, layer, weight in masked_weights(self.model)
        }
        changed_total = 0
        layers = []
        for row in stats["layers"]:
            current, before = masks[row["name"]], self._previous.get(row["name"])
            changed = None
            if before is not None and before.shape == current.shape:
                count = int(np.sum(before != current))
                changed_total += count
                changed = count / current.size
            layers.append({**{k: row[k] for k in _LAYER_KEYS}, "changed": changed})
        has_previous = bool(self._previous)
        self._previous = {name: m.astype(np.int8) for name, m in masks.items()}
        return {
            "epoch": epoch,
            "logs": {k: _jsonable(v) for k, v in (logs or {}).items()},
            "remaining": stats["remaining"],
            "flipped": stats["flipped"],
            "changed": changed_total / stats["total"] if has_previous else None,
            "layers": layers,
        }

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(record) + "\n" for record in self.records)
        atomic_write_text(self.path, text)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        done = int(getattr(self.model, "_initial_epoch", None) or 0)  # set by BackupAndRestore
        self.records = [r for r in read_records(self.path) if r.get("epoch", 0) <= done]
        if not done or not self.records:
            self.records = [r for r in self.records if r.get("epoch") != 0]
            self.records.insert(0, self._record(0, {}))
        else:  # resumed: the masks now are the ones after `done` epochs
            self._record(done, {})
        self._write()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.records = [r for r in self.records if r.get("epoch", 0) <= epoch]
        self.records.append(self._record(epoch + 1, logs))
        self._write()


def _jsonable(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def flatten_records(records: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """Columns of a list of records: ``epoch``, ``remaining``, ``flipped``, the logs' metrics
    and ``remaining/<layer>`` (``None`` where a record lacks the value)."""
    records = list(records)
    keys: list[str] = ["epoch", "remaining", "flipped", "changed"]
    for record in records:
        for key in record.get("logs", {}):
            if key not in keys:
                keys.append(key)
        for row in record.get("layers", []):
            for what in ("remaining", "flipped"):
                name = f"{what}/{row['name']}"
                if name not in keys:
                    keys.append(name)
    columns: dict[str, list[Any]] = {key: [] for key in keys}
    for record in records:
        flat = {k: record.get(k) for k in ("epoch", "remaining", "flipped", "changed")}
        flat.update(record.get("logs", {}))
        for row in record.get("layers", []):
            flat[f"remaining/{row['name']}"] = row.get("remaining")
            flat[f"flipped/{row['name']}"] = row.get("flipped")
        for key in keys:
            columns[key].append(flat.get(key))
    return columns
