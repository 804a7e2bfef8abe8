"""Reports: pictures of which weights matter, for one or several run folders.

    keras_ssm.report.make_report(["runs/fcn"], "runs/fcn/report")   # -> report.html, PNGs
    ssm report runs/sweep/fcn_wd* --out runs/sweep/report           # the same from the shell

For every run it draws (PNG, matplotlib Agg): per-layer keep / hide / invert bars with the units
still connected, the first layer's input map (kept weights per input pixel, split by the sign
of ``w0 * M``, next to the data's mean image), the conv layers' remaining share per filter and
kernel position, score histograms with the threshold ``±tau``, and the evolution of remaining
weights and accuracy (from ``analysis.jsonl`` written by :class:`keras_ssm.analysis.MaskRecorder`,
else from ``history.csv``).  Across runs it draws the accuracy-vs-remaining frontier with the
paper's point.  ``report.html`` (self-contained: images inlined) and ``report.md`` tie them
together with :func:`keras_ssm.summary`'s table and a few measured findings.

>>> from keras_ssm import report
>>> report.load_run("no/such/run")
Traceback (most recent call last):
...
keras_ssm.run_dir.RunFolderError: no/such/run is not a run folder (no such directory)
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssm.atomic import atomic_write_text
from keras_ssm.run_dir import RunDir, RunFolderError

__all__ = ["Run", "load_run", "make_report"]


@dataclasses.dataclass
class Run:
    """One run folder: its metrics, history, per-epoch records and model (when present)."""

    path: Path
    label: str
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    records: list[dict[str, Any]]
    model: Any = None


def load_run(path: str | os.PathLike[str], label: str | None = None) -> Run:
    """Read a run folder written by :func:`keras_ssm.train` (``model.keras`` and/or
    ``metrics.json``, optionally ``history.csv`` and ``analysis.jsonl``).  A folder with neither
    file (missing, or a run still training) raises :class:`keras_ssm.run_dir.RunFolderError`."""
    from keras_ssm import analysis

    run_dir = RunDir(path)
    if not run_dir.path.is_dir():
        raise RunFolderError(f"{run_dir.path} is not a run folder (no such directory)")
    if not run_dir.is_finished():
        raise RunFolderError(
            f"{run_dir.path} holds no {RunDir.MODEL} or {RunDir.METRICS}: not a finished run "
            "of `ssm train`"
        )
    metrics = run_dir.read_metrics()
    model = run_dir.read_model() if run_dir.model_path.is_file() else None
    return Run(
        path=run_dir.path,
        label=label or run_dir.path.resolve().name,
        metrics=metrics,
        history=run_dir.read_history(),
        records=analysis.read_records(run_dir.path),
        model=model,
    )


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short unique labels: folder names without the prefix/suffix they all share (cut at '_')."""
    names = [p.resolve().name for p in paths]
    if len(names) > 1:
        prefix = os.path.commonprefix(names)
        prefix = prefix[: prefix.rfind("_") + 1]
        suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
        suffix = suffix[suffix.find("_") :] if "_" in suffix else ""
        short = [n[len(prefix) : len(n) - len(suffix)] or n for n in names]
        if len(set(short)) == len(short) and all(short):
            names = short
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


# ----------------------------------------------------------------------------- data
_MEAN_CACHE: dict[tuple[str, str | None], np.ndarray | None] = {}


def _mean_image(dataset: str | None, data_dir: str | None) -> np.ndarray | None:
    """The test split's mean image (or ``None`` when the data is not at hand)."""
    if not dataset:
        return None
    key = (dataset, data_dir)
    if key not in _MEAN_CACHE:
        try:
            from keras_ssm import data

            (_, _), (x_test, _) = data.load_arrays(dataset, data_dir=data_dir)
            _MEAN_CACHE[key] = np.asarray(x_test, dtype=np.float32).mean(axis=0)
        except Exception:  # the mean image is an extra; a report never fails for it
            _MEAN_CACHE[key] = None
    return _MEAN_CACHE[key]


# ----------------------------------------------------------------------------- findings
def _columns(run: Run) -> dict[str, list[Any]]:
    """Per-epoch columns (``epoch`` = epochs completed), from analysis.jsonl or history.csv."""
    from keras_ssm import analysis

    if run.records:
        return analysis.flatten_records(run.records)
    if not run.history:
        return {}
    columns: dict[str, list[Any]] = {k: list(v) for k, v in run.history.items()}
    columns["epoch"] = [int(e) + 1 for e in run.history.get("epoch", [])]
    return columns


def _pct(value: float) -> str:
    p = 100 * value
    return f"{p:.2f}%" if p < 10 else f"{p:.1f}%"


def _layer_findings(stats: dict[str, Any]) -> list[str]:
    lines = []
    parts = [
        f"{row['name']} {_pct(row['remaining'])} ({_pct(row['flipped'])} of them inverted)"
        for row in stats["layers"]
    ]
    text = f"{_pct(stats['remaining'])} of the weights remain: " + "; ".join(parts) + "."
    if 0.4 < stats["flipped"] < 0.6:
        text += (
            " About half of the remaining weights are inverted: w0's random signs are not "
            "trusted, the mask picks each remaining weight's sign."
        )
    lines.append(text)
    cut = [
        f"{row['name']} {row['dead_units']} of {row['units']}"
        for row in stats["layers"]
        if row.get("dead_units")
    ]
    if cut:
        lines.append(
            "Units cut off entirely (no incoming or no outgoing weight): "
            + "; ".join(cut)
            + ". The network that is left is narrower than the one that was built."
        )
    return lines


def _input_findings(maps: dict[str, Any], mean: np.ndarray | None) -> list[str]:
    remaining = np.asarray(maps["remaining"], dtype=float)
    lines = []
    unused = int(np.sum(remaining == 0))
    text = (
        f"{unused} of {remaining.size} input pixels feed no remaining weight of "
        f"{maps['layer']}; the busiest pixel feeds {int(remaining.max())} of {maps['units']} units."
    )
    if remaining.ndim == 2 and min(remaining.shape) > 8:
        h, w = remaining.shape
        b = max(1, min(h, w) // 7)
        inner = remaining[b : h - b, b : w - b].sum()
        share = inner / max(remaining.sum(), 1)
        area = (h - 2 * b) * (w - 2 * b) / (h * w)
        text += (
            f" The central {h - 2 * b}x{w - 2 * b} pixels ({area:.0%} of the image) hold "
            f"{share:.1%} of the first layer's remaining weights."
        )
    lines.append(text)
    if mean is not None:
        ink = np.asarray(mean, dtype=float)
        ink = ink.mean(axis=-1) if ink.ndim == 3 else ink
        if ink.shape == remaining.shape and ink.std() > 0 and remaining.std() > 0:
            r = float(np.corrcoef(ink.ravel(), remaining.ravel())[0, 1])
            lines.append(
                f"Correlation between the remaining weights per pixel and the data's mean image: "
                f"r = {r:.2f}."
            )
    pos, neg = np.asarray(maps["positive"]), np.asarray(maps["negative"])
    total = max(int(pos.sum() + neg.sum()), 1)
    lines.append(
        f"Of the first layer's remaining weights, {pos.sum() / total:.1%} are excitatory "
        f"(w0·M > 0) and {neg.sum() / total:.1%} inhibitory."
    )
    return lines


def _evolution_findings(columns: dict[str, list[Any]]) -> list[str]:
    values = [
        (int(e), float(v))
        for e, v in zip(columns.get("epoch", []), columns.get("remaining", []), strict=False)
        if v not in (None, "")
    ]
    if len(values) < 2:
        return []
    (e0, r0), (e1, r1) = values[0], values[-1]
    start = "before training" if e0 == 0 else f"after epoch {e0}"
    text = f"Remaining weights went from {_pct(r0)} ({start}) to {_pct(r1)} (after epoch {e1})"
    target = math.sqrt(max(r0 * r1, 0.0))
    halfway = next((e for e, r in values if r <= target), None)
    if halfway is not None and r1 < r0:
        text += f"; half of that fall (on a log scale) happened by epoch {halfway}"
    changed = [float(c) for c in columns.get("changed", []) if c not in (None, "")]
    if changed:
        text += f"; in the last epoch {changed[-1]:.3%} of the mask entries changed"
    return [text + "."]


# ----------------------------------------------------------------------------- report
@dataclasses.dataclass
class _Section:
    run: Run
    images: list[tuple[str, Path, str]]  # (title, path, caption)
    findings: list[str]
    summary: str
    notes: list[str]


def _run_section(
    run: Run, folder: Path, data_dir: str | None, use_data: bool, max_score_panels: int
) -> _Section:
    from keras_ssm import analysis, plots, stats
    from keras_ssm.wrap import masked_layers

    images: list[tuple[str, Path, str]] = []
    findings: list[str] = []
    notes: list[str] = []
    summary_text = ""
    model = run.model
    masked = masked_layers(model) if model is not None else []
    if model is None:
        notes.append("No model.keras in this folder: only metrics and curves are shown.")
    elif not masked:
        notes.append("This model has no masked layers (a dense baseline): nothing to map.")
    if masked:
        summary_text = stats.summary(model, print_fn=lambda _: None)
        model_st = analysis.model_stats(model)
        images.append(
            (
                "Keep / hide / invert per layer",
                plots.layer_bars(model_st, folder / "layers.png", title=run.label),
                "Each layer's weights split into kept (+1), hidden (0) and inverted (-1); the "
                "remaining ones close up (log axis); and how many units still have weights in "
                "and out.",
            )
        )
        findings += _layer_findings(model_st)
        maps = analysis.input_map(model)
        if maps is not None:
            mean = _mean_image(run.metrics.get("dataset"), data_dir) if use_data else None
            if mean is not None and mean.size != np.asarray(maps["remaining"]).size * (
                mean.shape[-1] if mean.ndim == 3 else 1
            ):
                mean = None
            images.append(
                (
                    "First-layer input map",
                    plots.input_map(maps, folder / "input_map.png", mean_image=mean),
                    "How many remaining weights leave each input pixel, and how many of them "
                    "excite (w0·M > 0) or inhibit (< 0) the unit they feed.",
                )
            )
            findings += _input_findings(maps, mean)
        weights = analysis.masked_weights(model)
        # conv kernels (a multi-dimensional EinsumDense kernel is not a conv's)
        convs = [(layer, w) for _, layer, w in weights if hasattr(layer, "kernel_size")]
        if convs:
            cmaps = [analysis.conv_maps(layer, w) for layer, w in convs[:12]]
            images.append(
                (
                    "Conv layers: per filter and per kernel position",
                    plots.conv_maps(cmaps, folder / "conv_maps.png"),
                    "The remaining share of each filter (sorted) and of each kernel position.",
                )
            )
            if len(convs) > 12:
                notes.append(f"Conv maps show the first 12 of {len(convs)} conv kernels.")
        score_items = [
            {"name": name, **analysis.layer_arrays(layer, w)}
            for name, layer, w in weights[:max_score_panels]
        ]
        images.append(
            (
                "Score histograms",
                plots.score_histograms(score_items, folder / "scores.png"),
                "The learned scores of each layer; the dashed lines are the signed mask's "
                "threshold ±τ: inside the band a weight is hidden, above it kept, below it "
                "inverted.",
            )
        )
        if len(weights) > max_score_panels:
            notes.append(f"Score histograms show the first {max_score_panels} of {len(weights)}.")
    columns = _columns(run)
    if columns.get("epoch"):
        try:
            path = plots.evolution(columns, folder / "evolution.png", title=run.label)
        except ValueError:
            path = None
        if path is not None:
            caption = (
                "Remaining weights (all layers and per layer), accuracy, and the share of mask "
                "entries that changed, per epoch (from analysis.jsonl)."
                if run.records
                else "Remaining weights and accuracy per epoch (from history.csv)."
            )
            images.append(("Evolution over training", path, caption))
            findings += _evolution_findings(columns)
    else:
        notes.append("No history.csv or analysis.jsonl: no curves over training.")
    return _Section(run, images, findings, summary_text, notes)


def _frontier_points(runs: Sequence[Run]) -> list[dict[str, Any]]:
    points = []
    for run in runs:
        m = run.metrics
        if "test_accuracy" not in m or "model" not in m:
            continue
        wd = (m.get("recipe") or {}).get("wd")
        points.append(
            {
                "model": m["model"],
                "accuracy": float(m["test_accuracy"]),
                "remaining": m.get("remaining") if m.get("mask", "none") != "none" else None,
                "label": run.label,
                "wd": wd,
            }
        )
    return points


def _runs_table(runs: Sequence[Run]) -> list[list[str]]:
    rows = [["run", "model", "dataset", "mask", "wd", "epochs", "test accuracy", "remaining"]]
    for run in runs:
        m = run.metrics
        wd = (m.get("recipe") or {}).get("wd")
        rows.append(
            [
                run.label,
                str(m.get("model", "?")),
                str(m.get("dataset", "?")),
                str(m.get("mask", "?")),
                "-" if wd is None else f"{wd:g}",
                str(m.get("epochs", "?")),
                f"{100 * m['test_accuracy']:.2f}%" if "test_accuracy" in m else "-",
                _pct(m["remaining"]) if m.get("remaining") is not None else "-",
            ]
        )
    return rows


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
img{max-width:100%;border:1px solid #eee}.caption{color:#555;font-size:.9em;margin:.2em 0 1.2em}
.note{color:#8a5a00}
"""


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def make_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    use_data: bool = True,
    max_score_panels: int = 12,
) -> dict[str, Any]:
    """Write the PNGs, ``report.html`` (self-contained) and ``report.md`` into ``out``.

    Per run the pictures go to ``out/<run label>/``; the frontier (every run with a
    ``metrics.json``, the paper's point marked) to ``out/frontier.png``.  Returns ``{"html":
    path, "markdown": path, "images": [paths], "seconds": wall time}``.
    """
    from keras_ssm import plots

    start = time.perf_counter()
    if not run_dirs:
        raise ValueError("give at least one run folder")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"{out} cannot be created: {err.strerror or err}") from err
    sections = [
        _run_section(run, out / _slug(run.label), data_dir, use_data, max_score_panels)
        for run in runs
    ]
    images: list[Path] = []
    frontier = None
    points = _frontier_points(runs)
    if points:
        frontier = plots.frontier(points, out / "frontier.png")
        images.append(frontier)
    for section in sections:
        images += [path for _, path, _ in section.images]

    title = "keras_ssm report: which weights matter"
    table = _runs_table(runs)
    html_parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(runs)} run(s): " + ", ".join(html.escape(str(r.path)) for r in runs) + "</p>",
        _html_table(table),
    ]
    md_parts = [f"# {title}", "", _md_table(table), ""]
    if frontier is not None:
        caption = (
            "Test accuracy against the share of weights that remain (log axis); the star is the "
            "paper's result for the same model, the dotted line its dense baseline."
        )
        html_parts += [
            "<h2>Accuracy vs remaining weights</h2>",
            _img_tag(frontier, "frontier"),
            f"<p class='caption'>{html.escape(caption)}</p>",
        ]
        md_parts += [
            "## Accuracy vs remaining weights",
            "",
            f"![frontier]({frontier.relative_to(out).as_posix()})",
            "",
            caption,
            "",
        ]
    for section in sections:
        run = section.run
        m = run.metrics
        head = f"Run {run.label}"
        facts = []
        if "test_accuracy" in m:
            facts.append(f"test accuracy {100 * m['test_accuracy']:.2f}%")
        if m.get("remaining") is not None:
            facts.append(f"remaining {_pct(m['remaining'])}")
        if m.get("epochs") is not None:
            facts.append(f"{m['epochs']} epochs")
        html_parts += [f"<h2>{html.escape(head)}</h2>", f"<p>{html.escape(str(run.path))}"]
        html_parts[-1] += (": " + html.escape(", ".join(facts)) if facts else "") + "</p>"
        md_parts += [f"## {head}", "", f"`{run.path}`" + (": " + ", ".join(facts) if facts else "")]
        md_parts.append("")
        for note in section.notes:
            html_parts.append(f"<p class='note'>{html.escape(note)}</p>")
            md_parts += [f"> {note}", ""]
        if section.findings:
            html_parts.append(
                "<h3>What the masks show</h3><ul>"
                + "".join(f"<li>{html.escape(f)}</li>" for f in section.findings)
                + "</ul>"
            )
            md_parts += ["### What the masks show", ""]
            md_parts += [f"- {f}" for f in section.findings] + [""]
        if section.summary:
            html_parts.append(
                f"<h3>keras_ssm.summary</h3><pre>{html.escape(section.summary)}</pre>"
            )
            md_parts += ["### keras_ssm.summary", "", "```", section.summary, "```", ""]
        for name, path, caption in section.images:
            html_parts += [
                f"<h3>{html.escape(name)}</h3>",
                _img_tag(path, name),
                f"<p class='caption'>{html.escape(caption)}</p>",
            ]
            md_parts += [
                f"### {name}",
                "",
                f"![{name}]({path.relative_to(out).as_posix()})",
                "",
                caption,
                "",
            ]
    seconds = time.perf_counter() - start
    footer = f"Written by ssm report in {seconds:.1f} s."
    html_parts += [f"<p class='caption'>{html.escape(footer)}</p>", "</body></html>"]
    md_parts += [footer, ""]
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, "\n".join(html_parts))
    atomic_write_text(md_path, "\n".join(md_parts))
    return {"html": html_path, "markdown": md_path, "images": images, "seconds": seconds}
