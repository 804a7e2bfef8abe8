"""Pictures of which weights matter (matplotlib, Agg, PNG).

Each function takes what :mod:`keras_ssm.analysis` computes and a path, writes one PNG
(through a temporary file and a rename) and returns the path.  Figures are drawn with
matplotlib's object API (``matplotlib.figure.Figure``), never ``pyplot``: nothing changes the
global backend, and importing this module is the only thing that imports matplotlib.

>>> import tempfile, keras, keras_ssm
>>> from keras_ssm import analysis, plots
>>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
...                           keras_ssm.layers.MaskedDense(8), keras_ssm.layers.MaskedDense(3)])
>>> path = plots.layer_bars(analysis.model_stats(model), tempfile.mkdtemp() + "/layers.png")
>>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_ssm.atomic import save_figure

__all__ = [
    "PAPER",
    "PAPER_DENSE",
    "conv_maps",
    "evolution",
    "frontier",
    "input_map",
    "layer_bars",
    "score_histograms",
]

KEEP, HIDE, INVERT = "#2a9d8f", "#d9d9d9", "#e76f51"
DPI = 100

# The paper's signed supermask results (test accuracy %, remaining weights %) and dense
# baselines (accuracy %): authors' README, means over all runs (see /shared/notes/paper.md).
PAPER: dict[str, tuple[float, float]] = {
    "fcn": (97.48, 3.77),
    "conv2": (68.37, 0.60),
    "conv4": (77.40, 2.91),
    "conv6": (79.17, 2.36),
    "conv8": (80.91, 1.17),
    "resnet20": (81.68, 21.13),
    "resnet20x2": (84.42, 7.69),
    "resnet20x3": (84.89, 4.06),
    "resnet56": (60.01, 29.39),
    "resnet110": (46.42, 20.64),
}
PAPER_DENSE: dict[str, float] = {
    "fcn": 97.42,
    "conv2": 68.79,
    "conv4": 74.50,
    "conv6": 75.91,
    "conv8": 72.24,
    "resnet20": 84.91,
    "resnet20x2": 86.80,
    "resnet20x3": 87.32,
    "resnet56": 68.04,
    "resnet110": 62.70,
}


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    save_figure(fig, path, dpi=DPI, format="png", metadata={"Software": None})
    return Path(path)


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _plain_log(ax: Any, axis: str = "y", minor_labels: bool = True) -> None:
    """Log-axis tick labels as plain numbers (1, 2, 5, 10, ...) instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter

    def major(value: float, _: Any) -> str:
        return f"{value:g}"

    def minor(value: float, _: Any) -> str:
        digit = f"{value:e}"[0]
        return f"{value:g}" if minor_labels and digit in "25" else ""

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(major))
    target.set_minor_formatter(FuncFormatter(minor))


def _maybe_log(ax: Any) -> None:
    """A log y axis (plain labels) when the plotted data span more than a factor of 10."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 10:
        ax.set_yscale("log")
        _plain_log(ax)
        ax.set_ylabel(ax.get_ylabel() + " (log)")


def _pct(value: float) -> str:
    """A share as a percentage with enough digits to read small values."""
    p = 100 * value
    if p == 0:
        return "0%"
    return f"{p:.2f}%" if p < 10 else f"{p:.1f}%"


# ----------------------------------------------------------------------------- per layer
def layer_bars(stats: Mapping[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Per-layer keep / hide / invert bars, the remaining weights close up, and dead units.

    ``stats`` is :func:`keras_ssm.analysis.model_stats`'s result.  Left: each layer's weights as
    one 100% bar (kept, hidden, inverted).  Middle: kept and inverted as a share of the layer
    (log axis, so a 1% layer is as readable as a 50% one).  Right: units with some incoming and
    outgoing weight ("alive") against units cut off (no incoming or no outgoing weight).
    """
    rows = list(stats["layers"])
    names = [row["name"] for row in rows]
    y = np.arange(len(rows))[::-1]
    height = 1.2 + 0.42 * len(rows)
    fig = _figure(13, max(2.9, height + 0.4))
    ax_all, ax_zoom, ax_units = fig.subplots(1, 3, width_ratios=[1.2, 1.0, 1.0])

    kept = np.array([row["kept_frac"] for row in rows])
    hidden = np.array([row["hidden_frac"] for row in rows])
    inverted = np.array([row["inverted_frac"] for row in rows])
    ax_all.barh(y, 100 * kept, color=KEEP)
    ax_all.barh(y, 100 * hidden, left=100 * kept, color=HIDE)
    ax_all.barh(y, 100 * inverted, left=100 * (kept + hidden), color=INVERT)
    for yi, row in zip(y, rows, strict=True):
        ax_all.text(
            50, yi, f"{_pct(row['remaining'])} remain", ha="center", va="center", fontsize=8
        )
    ax_all.set_yticks(y, names)
    ax_all.set_xlim(0, 100)
    ax_all.set_xlabel("share of the layer's weights (%)")
    ax_all.set_title("keep / hide / invert per layer")

    w = 0.38
    ax_zoom.barh(y + w / 2, 100 * kept, height=w, color=KEEP)
    ax_zoom.barh(y - w / 2, 100 * inverted, height=w, color=INVERT)
    for yi, row in zip(y, rows, strict=True):
        ax_zoom.text(
            100 * max(row["kept_frac"], row["inverted_frac"], 1e-6) * 1.15,
            yi,
            f"{_pct(row['flipped'])} of remaining\ninverted",
            va="center",
            fontsize=7,
        )
    ax_zoom.set_xscale("log")
    positive = [v for v in (*kept, *inverted) if v > 0] or [1e-3]
    ax_zoom.set_xlim(100 * min(min(positive) / 2, max(positive) / 30), 100 * max(positive) * 20)
    _plain_log(ax_zoom, "x", minor_labels=False)
    ax_zoom.set_yticks(y, names)
    ax_zoom.set_xlabel("share of the layer's weights (%, log)")
    ax_zoom.set_title("remaining weights close up: kept vs inverted")

    units = np.array([row["units"] for row in rows])
    dead = np.array([row.get("dead_units", row["no_incoming"]) for row in rows])
    alive_pct = 100 * (units - dead) / units
    ax_units.barh(y, alive_pct, color=KEEP)
    ax_units.barh(y, 100 - alive_pct, left=alive_pct, color=HIDE)
    for yi, u, d in zip(y, units, dead, strict=True):
        ax_units.text(101, yi, f"{u - d}/{u}", va="center", fontsize=8)
    ax_units.set_yticks(y, names)
    ax_units.set_xlim(0, 118)
    ax_units.set_xticks([0, 25, 50, 75, 100])
    ax_units.set_xlabel("share of the layer's units (%)")
    ax_units.set_title("units still connected (in and out)")
    from matplotlib.patches import Patch

    handles = [
        Patch(color=KEEP, label="keep (+1) / unit connected"),
        Patch(color=HIDE, label="hide (0) / unit cut off (no weight in or out)"),
        Patch(color=INVERT, label="invert (-1)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- input map
def input_map(
    maps: Mapping[str, Any],
    path: str | os.PathLike[str],
    mean_image: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """The first layer's remaining weights per input pixel, split by the sign of ``w0 * M``.

    ``maps`` is :func:`keras_ssm.analysis.input_map`'s result; ``mean_image`` (optional, same
    shape) is the data's mean image, drawn first for comparison.  Panels: remaining weights
    leaving each pixel, the excitatory ones (``w0 * M > 0``), the inhibitory ones (``< 0``) and
    their difference.
    """
    remaining = np.asarray(maps["remaining"], dtype=float)
    if remaining.ndim == 1:  # not an image: show the vector as one row
        remaining = remaining[None, :]
    shape = remaining.shape
    positive = np.asarray(maps["positive"], dtype=float).reshape(shape)
    negative = np.asarray(maps["negative"], dtype=float).reshape(shape)
    panels: list[tuple[str, np.ndarray, str, str]] = []
    if mean_image is not None:
        mean = np.asarray(mean_image, dtype=float)
        mean = mean.mean(axis=-1) if mean.ndim == 3 else mean
        panels.append(("mean input (data)", mean.reshape(shape), "Greys", "pixel value"))
    unused = int(np.sum(remaining == 0))
    panels += [
        (
            f"remaining weights per pixel\n({unused} of {remaining.size} unused)",
            remaining,
            "viridis",
            "weights",
        ),
        ("excitatory (w0·M > 0)", positive, "Reds", "weights"),
        ("inhibitory (w0·M < 0)", negative, "Blues", "weights"),
        ("excitatory - inhibitory", positive - negative, "RdBu_r", "weights"),
    ]
    aspect = shape[1] / max(shape[0], 1)
    fig = _figure(2.6 * len(panels) * min(max(aspect, 0.6), 2.0), 3.1)
    axes = fig.subplots(1, len(panels))
    top = max(float(positive.max()), float(negative.max()), 1.0)
    for ax, (label, image, cmap, unit) in zip(axes, panels, strict=True):
        if cmap == "RdBu_r":
            bound = max(float(np.abs(image).max()), 1.0)
            kw: dict[str, Any] = {"vmin": -bound, "vmax": bound}
        elif cmap in ("Reds", "Blues"):
            kw = {"vmin": 0, "vmax": top}
        else:
            kw = {}
        shown = ax.imshow(image, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{shape[1]} px" if shape[0] > 1 else "input feature", fontsize=8)
        ax.set_ylabel(f"{shape[0]} px" if shape[0] > 1 else "", fontsize=8)
        bar = fig.colorbar(shown, ax=ax, shrink=0.8)
        bar.set_label(unit, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(
        title or f"first layer ({maps.get('layer', '')}): where the remaining weights start",
        fontsize=10,
    )
    return _save(fig, path)


# ----------------------------------------------------------------------------- conv maps
def conv_maps(
    maps: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Per conv layer: the remaining share of each filter (sorted) and per kernel position.

    ``maps`` is a list of :func:`keras_ssm.analysis.conv_maps` results (one row each).
    """
    if not maps:
        raise ValueError("no conv layers to draw")
    fig = _figure(9, 1.2 + 1.9 * len(maps))
    axes = np.atleast_2d(fig.subplots(len(maps), 2, width_ratios=[3, 1]))
    for (ax_f, ax_k), item in zip(axes, maps, strict=True):
        per_filter = 100 * np.sort(np.asarray(item["per_filter"], dtype=float))[::-1]
        ax_f.bar(np.arange(per_filter.size), per_filter, width=1.0, color=KEEP)
        ax_f.axhline(per_filter.mean(), color="k", lw=0.8, ls="--")
        empty = int(np.sum(per_filter == 0))
        ax_f.set_title(
            f"{item['name']}: remaining per filter (sorted; mean {per_filter.mean():.2f}%, "
            f"{empty}/{per_filter.size} empty)",
            fontsize=9,
        )
        ax_f.set_xlabel("filter rank", fontsize=8)
        ax_f.set_ylabel("remaining (%)", fontsize=8)
        ax_f.set_xlim(-0.5, per_filter.size - 0.5)
        pos = 100 * np.asarray(item["per_position"], dtype=float)
        while pos.ndim > 2:  # Conv3D: average over depth
            pos = pos.mean(axis=0)
        if pos.ndim == 1:
            pos = pos[None, :]
        shown = ax_k.imshow(pos, cmap="viridis", vmin=0, interpolation="nearest")
        for (i, j), value in np.ndenumerate(pos):
            ax_k.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="w")
        ax_k.set_title("remaining (%) per kernel position", fontsize=9)
        ax_k.set_xticks(range(pos.shape[1]))
        ax_k.set_yticks(range(pos.shape[0]))
        ax_k.set_xlabel("kernel column", fontsize=8)
        ax_k.set_ylabel("kernel row", fontsize=8)
        fig.colorbar(shown, ax=ax_k, shrink=0.8).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- scores
def score_histograms(
    layers: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    max_panels: int = 24,
) -> Path:
    """A histogram of each layer's scores with the signed mask's threshold ``±tau`` marked.

    ``layers``: dicts with ``name``, ``scores`` and ``tau`` (``None`` for masks without one),
    e.g. ``{"name": layer.name, **analysis.layer_arrays(layer)}``.  Counts are on a log axis;
    the bands are shaded invert / hide / keep.
    """
    layers = list(layers)[:max_panels]
    if not layers:
        raise ValueError("no layers to draw")
    cols = min(3, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig = _figure(4.0 * cols, 0.6 + 2.5 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, item in zip(axes, layers, strict=False):
        scores = np.asarray(item["scores"], dtype=float).ravel()
        tau = item.get("tau")
        bound = float(np.abs(scores).max()) or 1.0
        ax.hist(scores, bins=120, range=(-bound, bound), color="#555555", log=True, zorder=2)
        if tau is not None:
            ax.axvspan(-bound, -tau, color=INVERT, alpha=0.2, lw=0, zorder=0)
            ax.axvspan(-tau, tau, color=HIDE, alpha=0.6, lw=0, zorder=0)
            ax.axvspan(tau, bound, color=KEEP, alpha=0.2, lw=0, zorder=0)
            for x in (-tau, tau):
                ax.axvline(x, color="k", lw=0.8, ls="--")
            ax.text(tau, 1.0, " +τ", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
            ax.text(
                -tau,
                1.0,
                "-τ ",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="right",
                fontsize=8,
            )
        ax.set_xlim(-bound, bound)
        remaining = np.mean(np.abs(scores) > tau) if tau is not None else None
        suffix = "" if remaining is None else f" ({_pct(float(remaining))} outside ±τ)"
        ax.set_title(f"{item['name']}{suffix}", fontsize=9)
        ax.set_xlabel("score", fontsize=8)
        ax.set_ylabel("weights (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(layers) :]:
        fig.delaxes(ax)
    fig.suptitle(
        title or "scores: invert (< -τ, orange) / hide (grey) / keep (> +τ, green)", fontsize=10
    )
    return _save(fig, path)


# ----------------------------------------------------------------------------- evolution
def _series(columns: Mapping[str, Sequence[Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(columns["epoch"], dtype=float)
    values = columns.get(key)
    if values is None:
        return np.array([]), np.array([])
    y = np.array([np.nan if v is None or v == "" else float(v) for v in values])
    keep = ~np.isnan(y)
    return x[keep], y[keep]


def evolution(
    columns: Mapping[str, Sequence[Any]], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Remaining weights, accuracy and mask changes over training.

    ``columns``: ``epoch`` (epochs completed) and any of ``remaining``, ``remaining/<layer>``,
    ``accuracy``, ``val_accuracy``, ``changed`` (as :func:`keras_ssm.analysis.flatten_records`
    gives, or a ``history.csv`` with ``epoch`` shifted by one).  Panels without data are left
    out.
    """
    layer_keys = [k for k in columns if k.startswith("remaining/")]
    has_changed = len(_series(columns, "changed")[0]) > 0
    panels = ["remaining", "accuracy"] + (["changed"] if has_changed else [])
    has_remaining = len(_series(columns, "remaining")[0]) > 0 or layer_keys
    if not has_remaining:
        panels.remove("remaining")
    if not len(_series(columns, "accuracy")[0]) and not len(_series(columns, "val_accuracy")[0]):
        panels.remove("accuracy")
    if not panels:
        raise ValueError("nothing to draw: no remaining, accuracy or changed columns")
    fig = _figure(4.2 * len(panels), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "remaining":
            x, y = _series(columns, "remaining")
            if len(x):
                ax.plot(x, 100 * y, color="k", lw=2, label="all layers")
                ax.annotate(
                    f"{_pct(y[-1])}",
                    (x[-1], 100 * y[-1]),
                    fontsize=8,
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                )
            for key in layer_keys:
                x, y = _series(columns, key)
                ax.plot(x, 100 * y, lw=1, label=key.split("/", 1)[1])
            ax.set_ylabel("remaining weights (%)")
            _maybe_log(ax)
            ax.set_title("remaining weights")
        elif panel == "accuracy":
            for key, label, style in (
                ("accuracy", "train", "-"),
                ("val_accuracy", "test (validation data)", "--"),
            ):
                x, y = _series(columns, key)
                if len(x):
                    ax.plot(x, 100 * y, ls=style, label=label)
            x, y = _series(columns, "val_accuracy")
            if len(x):
                ax.annotate(
                    f"{100 * y[-1]:.2f}%",
                    (x[-1], 100 * y[-1]),
                    fontsize=8,
                    xytext=(3, -8),
                    textcoords="offset points",
                )
                low = float(np.nanpercentile(100 * y, 10))
                ax.set_ylim(max(0.0, low - 2), 100)
            ax.set_ylabel("accuracy (%)")
            ax.set_title("accuracy")
        else:
            x, y = _series(columns, "changed")
            y = np.maximum(100 * y, 1e-4)
            ax.plot(x, y, color="#6a4c93")
            ax.set_ylabel("mask entries changed (%)")
            _maybe_log(ax)
            ax.set_title("mask entries changed per epoch")
        ax.set_xlabel("epochs completed")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- frontier
def frontier(
    points: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    paper: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Test accuracy against remaining weights, one panel per model, the paper's point marked.

    ``points``: dicts with ``model``, ``accuracy`` (0-1), ``remaining`` (0-1; ``None`` or
    ``1.0`` for a dense baseline, drawn as a dashed line) and ``label``.  The paper's result for
    each model (:data:`PAPER`) is a star, its dense baseline (:data:`PAPER_DENSE`) a dotted line.
    """
    paper = PAPER if paper is None else paper
    models = list(dict.fromkeys(str(p["model"]) for p in points))
    if not models:
        raise ValueError("no runs to draw")
    fig = _figure(5.6 * len(models), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(models)))
    for ax, model in zip(axes, models, strict=True):
        mine = [p for p in points if str(p["model"]) == model]
        masked = sorted(
            (p for p in mine if p.get("remaining") not in (None, 1.0)),
            key=lambda p: p["remaining"],
        )
        xs = [100 * p["remaining"] for p in masked]
        ys = [100 * p["accuracy"] for p in masked]
        if masked:
            ax.plot(xs, ys, "o", color=KEEP, ms=7, label="these runs (signed supermask)")
            spots: dict[tuple[float, float], list[str]] = {}
            for x, y, p in zip(xs, ys, masked, strict=True):
                spots.setdefault((round(x, 4), round(y, 4)), []).append(str(p.get("label", "")))
            for (x, y), labels in spots.items():
                ax.annotate(
                    ", ".join(labels), (x, y), fontsize=7, xytext=(5, 4), textcoords="offset points"
                )
        for p in mine:
            if p.get("remaining") in (None, 1.0):
                ax.axhline(
                    100 * p["accuracy"],
                    color="#444444",
                    ls="--",
                    lw=1,
                    label=f"dense run {p.get('label', '')}: {100 * p['accuracy']:.2f}%",
                )
        all_x, all_y = list(xs), list(ys)
        if model in paper:
            acc, rem = paper[model]
            ax.plot([rem], [acc], "*", color=INVERT, ms=15, label=f"paper: {acc}% at {rem}%")
            all_x.append(rem)
            all_y.append(acc)
        if model in PAPER_DENSE:
            ax.axhline(
                PAPER_DENSE[model],
                color=INVERT,
                ls=":",
                lw=1,
                label=f"paper dense baseline {PAPER_DENSE[model]}%",
            )
            all_y.append(PAPER_DENSE[model])
        all_y += [100 * p["accuracy"] for p in mine]
        ax.set_xscale("log")
        _plain_log(ax, "x")
        if all_x:
            ax.set_xlim(min(all_x) / 1.6, max(all_x) * 1.6)
        spread = max(all_y) - min(all_y)
        ax.set_ylim(min(all_y) - 0.25 * spread - 0.1, max(all_y) + 0.25 * spread + 0.1)
        ax.set_xlabel("remaining weights (%, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{model}: accuracy vs remaining weights")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
