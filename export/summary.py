"""The README's deployment and frontier tables, generated from the export result files.

Each ``export/RESULTS*.json`` written by ``export/benchmark.py`` becomes one row of the
deployment table: the signed run, its accuracy next to the dense (and TF-MOT) baseline's, how
much smaller its compact, int8 and int2 files are ("-": measured before the int2 file existed),
and how much faster its shrunk ONNX and sparse LiteRT files run than the dense ONNX file, under
default session options and under one thread.  Each recipe of an ``export/FRONTIER_*.json``
written by ``export/frontier.py`` becomes one row of the frontier table (mean ± sd over its
seeds; the LiteRT column only where the page was made with ``--litert``).  The numbers are
the files'; nothing here is typed by hand.

    python export/summary.py --write README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- deployment table: begin -->", "<!-- deployment table: end -->"
FRONTIER_BEGIN = "<!-- frontier table: begin -->"
FRONTIER_END = "<!-- frontier table: end -->"
FRONTIER_COLUMNS = (
    "model",
    "recipe",
    "seeds",
    "accuracy %",
    "remaining %",
    "parameters exported",
    "compact bytes",
    "int8 ONNX bytes",
    "ONNX b1 / b64, default",
    "ONNX b1 / b64, 1 thread",
    "LiteRT b1 / b64, default",
    "CPU",
    "results",
)
NAMES = {"fcn": "FCN", "conv2": "Conv2", "conv4": "Conv4", "conv6": "Conv6", "conv8": "Conv8"}
COLUMNS = (
    "model",
    "signed run",
    "accuracy: signed / dense / TF-MOT",
    "remaining",
    "shrunk to",
    "compact `.ssm`",
    "int8 ONNX",
    "int2 ONNX",
    "ONNX b1 / b64, default",
    "ONNX b1 / b64, 1 thread",
    "LiteRT b1 / b64, default",
    "CPU",
    "results",
)


def _artifact(res: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((a for a in res["artifacts"] if a["label"] == label), None)


def _speedups(artifact: dict[str, Any] | None, setting: str) -> str:
    if artifact is None or not artifact.get("latency"):
        return "-"
    cells = artifact["latency"][setting]
    return " / ".join(f"{cells[f'batch{b}']['speedup_vs_dense_onnx']:.2f}x" for b in (1, 64))


def _smaller(artifact: dict[str, Any] | None) -> str:
    if artifact is None:
        return "-"
    return f"{artifact['smaller_than_dense_onnx']:.1f}x ({artifact['bytes'] / 1000:,.1f} KB)"


def _shrunk(export: dict[str, Any] | None) -> str:
    layers = ((export or {}).get("shrink_report") or {}).get("layers", [])
    kept = [f"{e['units_after']}" for e in layers if "units_after" in e]
    return "-".join(kept) if kept else "-"


def _cpu(res: dict[str, Any]) -> str:
    """The CPU the latencies were measured on, short (``Intel Xeon; amx_bf16 ...`` -> ``Intel
    Xeon (AMX)``), or ``-`` for a result file that does not say."""
    cpu = res.get("settings", {}).get("cpu") or res.get("cpu")  # benchmark / frontier file
    if not cpu:
        return "-"
    inside = cpu.split("(", 1)[-1].rsplit(")", 1)[0]  # "x86_64, Intel(R) Xeon(R) ...; amx_bf16"
    name, _, flags = inside.partition(";")
    name = name.split(",", 1)[-1].strip().replace("(R)", "").replace(" Processor", "")
    return f"{name} (AMX)" if "amx" in flags else name


def row(res: dict[str, Any], results_md: str, which: str = "signed") -> str:
    """One Markdown table row for a benchmark result (``RESULTS*.json``): its signed run, or
    with ``which="structured"`` its second signed run (``--structured-run``; no TF-MOT
    accuracy: the TF-MOT baseline has the first run's sparsity)."""
    acc = res["keras_accuracy"]
    keys = (which, "dense", "tfmot" if which == "signed" else "")
    accuracy = " / ".join(f"{100 * acc[k]:.2f}%" if acc.get(k) is not None else "-" for k in keys)
    prefix = "signed" if which == "signed" else "structure-aware signed"
    fp32 = _artifact(res, f"{prefix} fold+shrink ONNX fp32")
    cells = [
        NAMES.get(res.get("model", "fcn"), res.get("model", "fcn")),
        f"`{Path(res[f'{which}_run']).name}`",
        accuracy,
        f"{100 * res[f'{which}_remaining']:.2f}%",
        _shrunk(res.get(f"{which}_export")),
        _smaller(_artifact(res, f"{prefix} compact .ssm")),
        _smaller(_artifact(res, f"{prefix} fold+shrink ONNX int8 (exact)")),
        _smaller(_artifact(res, f"{prefix} fold+shrink ONNX int2 (exact)")),
        _speedups(fp32, "default"),
        _speedups(fp32, "1 thread"),
        _speedups(_artifact(res, f"{prefix} fold+shrink LiteRT (sparse)"), "default"),
        _cpu(res),
        f"[{results_md}]({results_md})",
    ]
    return "| " + " | ".join(cells) + " |"


def _page(result_json: Path) -> str:
    """The results page beside a result file, as the README links it."""
    md = result_json.with_suffix(".md")
    return md.relative_to(ROOT).as_posix() if md.is_relative_to(ROOT) else str(md)


def table(paths: list[Path]) -> str:
    """The Markdown table for the given result files (one row each, in the order given)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for path in paths:
        res = json.loads(path.read_text(encoding="utf-8"))
        lines.append(row(res, _page(path)))
        if res.get("structured_run"):
            lines.append(row(res, _page(path), "structured"))
    return "\n".join(lines)


def frontier_table(paths: list[Path]) -> str:
    """The Markdown table of the frontier files' recipes (in the order given)."""
    cols = FRONTIER_COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for path in paths:
        res = json.loads(path.read_text(encoding="utf-8"))
        link = _page(path)
        for r in res["recipes"]:
            d, one = r["speedup"]["default"], r["speedup"]["1 thread"]
            lite = (r.get("litert_speedup") or {}).get("default")
            cells = [
                NAMES.get(res["model"], res["model"]),
                f"`{r['recipe']}`",
                str(r["seeds"]),
                r["accuracy"],
                r["remaining"],
                r["params"],
                r["compact"],
                r["int8"],
                f"{d['1']}x / {d['64']}x",
                f"{one['1']}x / {one['64']}x",
                f"{lite['1']}x / {lite['64']}x" if lite else "-",
                _cpu(res),
                f"[{link}]({link})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_paths(pattern: str = "RESULTS*.json") -> list[Path]:
    """``export/RESULTS*.json`` (or ``pattern``), by model (FCN first), then by file name."""
    order = list(NAMES)

    def key(path: Path) -> tuple[int, int, str]:
        model = json.loads(path.read_text(encoding="utf-8")).get("model", "fcn")
        return (order.index(model) if model in order else len(order), len(path.name), path.name)

    return sorted(HERE.glob(pattern), key=key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "results",
        nargs="*",
        type=Path,
        help="benchmark result files (default: export/RESULTS*.json, FCN first)",
    )
    p.add_argument(
        "--frontier",
        nargs="*",
        type=Path,
        help="frontier result files (default: export/FRONTIER_*.json, FCN first)",
    )
    p.add_argument("--write", type=Path, help="replace the table blocks of this Markdown file")
    a = p.parse_args(argv)
    paths = a.results or default_paths()
    if not paths:
        raise SystemExit("no benchmark result files (export/RESULTS*.json) to summarize")
    text = table([q.resolve() for q in paths])
    frontier = a.frontier or default_paths("FRONTIER_*.json")
    blocks = [(BEGIN, END, text)]
    if frontier:
        blocks.append(
            (FRONTIER_BEGIN, FRONTIER_END, frontier_table([q.resolve() for q in frontier]))
        )
    print("\n\n".join(block[2] for block in blocks))
    if a.write is not None:
        from keras_ssm.atomic import replace_block

        try:
            for begin, end, block in blocks:
                replace_block(a.write, begin, end, block)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
