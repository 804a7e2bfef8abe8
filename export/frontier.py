"""The structure-aware frontier: accuracy x remaining x shrunk size x onnxruntime latency of the
committed signed runs of one architecture, timed side by side with the dense architecture.

Every signed results folder of the model (``examples/paper/results/<model>_signed_*``, each
keeping its compact ``model.ssm``; or the folders given with ``--signed-run``) is exported as
``ssm export --format onnx --shrink --int8`` does (:func:`keras_ssm.export.export_run`) into
``--work-dir``.  For each run the page gives the fp32 ONNX file's accuracy on the test set
(counted against the compact model's own predictions: they must agree on every image), the
remaining weights, the units left after shrinking, the parameters, the compact and the int8
ONNX sizes, and the fp32 file's latency at batch 1 and 64 under default session options and
under one thread (``--litert``: also the sparse LiteRT file's, under LiteRT's interpreter
with its default threads and with one).  The reference is the dense zoo model of the same
architecture with random weights (speed does not depend on the values), exported the same
way; all files are timed in the same rounds, in a shuffled order each round.  Runs of one
recipe (the folder name without its ``_s<seed>``) are summarized as mean ± sd over their
seeds.

Unlike ``export/benchmark.py`` it trains nothing (no dense accuracy, no TF-MOT baseline), so it
re-times every committed run of a model in minutes::

    python export/frontier.py --model conv4 --results export/FRONTIER_conv4.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = ROOT / "examples" / "paper" / "results"
BATCHES = (1, 64)
SETTINGS = {"default": None, "1 thread": 1}  # threads of onnxruntime / LiteRT (None: default)
DENSE = "dense (random weights)"


def signed_runs(model: str, results: Path = RESULTS) -> list[Path]:
    """The committed signed results folders of ``model`` that keep a compact ``model.ssm``."""
    return sorted(
        p.parent for p in results.glob(f"{model}_signed_*/model.ssm") if p.parent.is_dir()
    )


def recipe_of(run: Path) -> str:
    """The run's name without its seed (``conv4_signed_default_up0.003_s7531`` ->
    ``conv4_signed_default_up0.003``)."""
    return re.sub(r"_s\d+$", "", run.name)


def units(model: Any) -> list[int]:
    """The width (units, filters) of every layer with a kernel but the output layer."""
    widths = [int(layer.kernel.shape[-1]) for layer in model.layers if hasattr(layer, "kernel")]
    return widths[:-1]


def dense_reference(model: str) -> Any:
    """The dense zoo ``model`` with random weights (seed 0)."""
    import keras

    import keras_ssm

    keras.utils.set_random_seed(0)
    return keras_ssm.models.get(model, mask=None)


def export_all(
    dense: Any,
    runs: dict[Path, dict[str, Any]],
    work: Path,
    progress: Any = print,
    litert: bool = False,
) -> dict[str, dict[str, Any]]:
    """Export the dense reference and every run (``litert``: a sparse LiteRT file too);
    ``{label: entry}`` with the paths and what the export manifest says."""
    from keras_ssm.export import export_model, export_run

    extra = ",litert" if litert else ""
    entries: dict[str, dict[str, Any]] = {}
    manifest = export_model(
        dense, work / "dense", "onnx" + extra, overwrite=True, progress=progress
    )
    entries[DENSE] = {"dir": work / "dense", "manifest": manifest, "run": None}
    for run, metrics in runs.items():  # each run folder with its metrics.json
        out = work / run.name
        manifest = export_run(
            run, "onnx,compact" + extra, out_dir=out, shrink=True, int8=True, overwrite=True,
            progress=progress,
        )  # fmt: skip
        entries[run.name] = {"dir": out, "manifest": manifest, "run": run, "metrics": metrics}
    return entries


def measure_accuracy(
    entries: dict[str, dict[str, Any]], x: np.ndarray, y: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Each signed run's fp32 ONNX accuracy, its disagreements with the compact model (and
    the LiteRT file's, when there is one), and the exported model's widths and parameter
    count."""
    from keras_ssm.export import load_compact
    from keras_ssm.export.runtime import keras_scores, litert_predict, onnx_predict

    out = {}
    for label, e in entries.items():
        if e["run"] is None:
            continue
        onnx_pred = np.argmax(onnx_predict(e["dir"] / "model.onnx", x, threads=None), axis=-1)
        compact = load_compact(e["dir"] / "model.ssm")
        keras_pred = np.argmax(keras_scores(compact, x), axis=-1)
        out[label] = {
            "units": units(compact),
            "params": int(compact.count_params()),
            "onnx_accuracy": float(np.mean(onnx_pred == y)),
            "keras_accuracy": float(np.mean(keras_pred == y)),
            "mismatches": int(np.sum(onnx_pred != keras_pred)),
        }
        if (e["dir"] / "model.tflite").is_file():
            scores = litert_predict(e["dir"] / "model.tflite", x, threads=None)
            litert_pred = np.argmax(scores, axis=-1)
            out[label]["litert_accuracy"] = float(np.mean(litert_pred == y))
            out[label]["litert_mismatches"] = int(np.sum(litert_pred != keras_pred))
    return out


def _runner(path: Path, runtime: str, threads: int | None, x: np.ndarray) -> Any:
    """A zero-argument call running one file on ``x``: an onnxruntime session (``threads``
    intra-op threads, None: its default) or a LiteRT interpreter (``num_threads``)."""
    from keras_ssm.export.runtime import litert_call, ort_call

    return (litert_call if runtime == "litert" else ort_call)(path, x, threads)


def time_all(
    entries: dict[str, dict[str, Any]],
    x: np.ndarray,
    rounds: int,
    runs: int,
    warmup: int,
    runtimes: tuple[str, ...] = ("onnx",),
) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """Median microseconds per call of every fp32 ONNX file (and LiteRT file, with ``"litert"``
    in ``runtimes``), per runtime, setting and batch: ``{runtime: {label: {setting: {batch:
    us}}}}``, the median over ``rounds`` of each round's median over ``runs`` timed calls; all
    files take turns in a shuffled order each round."""
    from keras_ssm.export.runtime import batch_of, interleaved_medians

    files = {"onnx": "model.onnx", "litert": "model.tflite"}
    keys = [(rt, label) for rt in runtimes for label in entries]
    cells: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = {
        key: {s: {b: [] for b in BATCHES} for s in SETTINGS} for key in keys
    }
    feeds = {b: batch_of(x, b) for b in BATCHES}
    for setting, threads in SETTINGS.items():
        calls = {
            (key, b): _runner(entries[key[1]]["dir"] / files[key[0]], key[0], threads, xb)
            for key in keys
            for b, xb in feeds.items()
        }
        for (key, b), medians in interleaved_medians(calls, rounds, runs, warmup).items():
            cells[key][setting][b] = medians
    out: dict[str, dict[str, dict[str, dict[int, float]]]] = {rt: {} for rt in runtimes}
    for (rt, label), c in cells.items():
        out[rt][label] = {
            s: {b: statistics.median(v) for b, v in per.items()} for s, per in c.items()
        }
    return out


def _mean_sd(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{statistics.mean(values):,.{digits}f} ± {statistics.stdev(values):,.{digits}f}"


def rows(result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-run rows, per-recipe rows) of the tables, from the result JSON."""
    dense = result["latency_us"][DENSE]
    litert = result.get("latency_litert_us") or {}
    per_run = []
    for label, run in result["runs"].items():
        lat = result["latency_us"][label]
        speed = {
            s: {b: dense[s][str(b)] / lat[s][str(b)] for b in BATCHES} for s in SETTINGS
        }  # fmt: skip
        row = {"label": label, "recipe": run["recipe"], "speedup": speed, **run}
        if label in litert:  # the LiteRT file against the dense ONNX file, as the ONNX one
            row["litert_speedup"] = {
                s: {b: dense[s][str(b)] / litert[label][s][str(b)] for b in BATCHES}
                for s in SETTINGS
            }
        per_run.append(row)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in per_run:
        groups.setdefault(row["recipe"], []).append(row)
    per_recipe = []
    for recipe, members in groups.items():
        extra = {}
        if all("litert_speedup" in m for m in members):
            extra = {
                "litert_accuracy": _mean_sd([100 * m["litert_accuracy"] for m in members], 2),
                "litert_speedup": {
                    s: {
                        b: _mean_sd([m["litert_speedup"][s][b] for m in members], 2)
                        for b in BATCHES
                    }
                    for s in SETTINGS
                },
            }
        per_recipe.append({
            "recipe": recipe,
            "seeds": len(members),
            "accuracy": _mean_sd([100 * m["onnx_accuracy"] for m in members], 2),
            "remaining": _mean_sd([100 * m["remaining"] for m in members], 2),
            "params": _mean_sd([m["params"] for m in members], 0),
            "compact": _mean_sd([m["compact_bytes"] for m in members], 0),
            "int8": _mean_sd([m["int8_onnx_bytes"] for m in members], 0),
            "speedup": {
                s: {b: _mean_sd([m["speedup"][s][b] for m in members], 2) for b in BATCHES}
                for s in SETTINGS
            },
            **extra,
        })  # fmt: skip
    return per_run, per_recipe


def markdown(result: dict[str, Any]) -> str:
    """The results page."""
    per_run, per_recipe = rows(result)
    dense = result["latency_us"][DENSE]
    litert = result.get("latency_litert_us") or {}
    litert_note = (
        [
            "- LiteRT (`--litert`): every model also exported as `ssm export --format litert` "
            "does (sparse storage) and timed in the same rounds under LiteRT's interpreter "
            "(XNNPACK; **default**: `num_threads=None`, **1 thread**: `num_threads=1`); its "
            "speed-ups are against the dense **ONNX** file in the same setting, the issue's "
            "reference (the dense LiteRT file's own latency is in the per-run table)"
        ]
        if litert
        else []
    )
    lines = [
        f"# Structure-aware frontier: {result['model']} on {result['dataset']}",
        "",
        "Produced by (from the repository root, after `source scripts/setup_env.sh`):",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        "- every signed run is exported as `ssm export --format onnx,compact --shrink --int8` "
        "does; accuracy: the fp32 ONNX file under a default onnxruntime session on the "
        f"{result['test_images']:,} test images ({result['mismatch_note']})",
        f"- reference: the dense `{result['model']}` of the zoo with random weights, exported "
        "the same way (speed does not depend on the weights); its accuracy is not measured here "
        "(`export/benchmark.py` trains one)",
        f"- latency: median over {result['rounds']} rounds of each round's median of "
        f"{result['timed_runs']} `session.run` calls after {result['warmup']} warm-up calls, "
        "all files in one process taking turns in a shuffled order; **default**: "
        "`onnxruntime.InferenceSession(path)` with default options; **1 thread**: "
        "`intra_op_num_threads=1`, sequential",
        f"- machine: {result['cpu']}; 1-minute load average {result['load'][0]:.2f} at the "
        f"start, {result['load'][1]:.2f} at the end of the timing ({result['timing_s']:.0f} s)",
        "- speed-up: the dense file's latency over the signed file's, same setting and batch; "
        "parameters exported: the compact model's, after fold, shrink and input crop",
        *litert_note,
        "",
        "## Per recipe (mean ± sd over seeds)",
        "",
        "| recipe | seeds | accuracy % | remaining % | parameters exported | compact bytes "
        "| int8 ONNX bytes | x faster b1 / b64, default | x faster b1 / b64, 1 thread |"
        + (" LiteRT: x faster b1 / b64, default | LiteRT: 1 thread |" if litert else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if litert else ""),
    ]
    for r in per_recipe:
        d, one = r["speedup"]["default"], r["speedup"]["1 thread"]
        cells = [r["recipe"], r["seeds"], r["accuracy"], r["remaining"], r["params"],
                 r["compact"], r["int8"], f"{d[1]} / {d[64]}", f"{one[1]} / {one[64]}"]  # fmt: skip
        if litert:
            ld, lone = r["litert_speedup"]["default"], r["litert_speedup"]["1 thread"]
            cells += [f"{ld[1]} / {ld[64]}", f"{lone[1]} / {lone[64]}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += [
        "",
        "## Per run (latency in us)",
        "",
        "| run | accuracy % | remaining % | units after shrink | b1 / b64 us, default "
        "| x faster | b1 / b64 us, 1 thread | x faster |"
        + (" LiteRT b1 / b64 us, default | LiteRT b1 / b64 us, 1 thread |" if litert else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if litert else ""),
    ]

    def us(lat: dict[str, dict[str, float]], setting: str) -> str:
        return f"{lat[setting]['1']:.1f} / {lat[setting]['64']:.1f}"

    cells = [DENSE, "-", "100", "-", us(dense, "default"), "1.00 / 1.00", us(dense, "1 thread"),
             "1.00 / 1.00"]  # fmt: skip
    if litert:
        cells += [us(litert[DENSE], "default"), us(litert[DENSE], "1 thread")]
    lines.append("| " + " | ".join(cells) + " |")
    for r in per_run:
        lat = result["latency_us"][r["label"]]
        sp = r["speedup"]
        cells = [
            r["label"],
            f"{100 * r['onnx_accuracy']:.2f}",
            f"{100 * r['remaining']:.2f}",
            "-".join(map(str, r["units"])),
            us(lat, "default"),
            f"{sp['default'][1]:.2f} / {sp['default'][64]:.2f}",
            us(lat, "1 thread"),
            f"{sp['1 thread'][1]:.2f} / {sp['1 thread'][64]:.2f}",
        ]
        if litert:
            cells += [us(litert[r["label"]], "default"), us(litert[r["label"]], "1 thread")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="zoo model name, e.g. fcn, conv4, conv6")
    p.add_argument(
        "--signed-run",
        type=Path,
        action="append",
        help="a signed results folder (repeat); default: every committed "
        "examples/paper/results/<model>_signed_* folder with a model.ssm",
    )
    p.add_argument("--work-dir", type=Path, help="default: runs/frontier/<model>")
    p.add_argument("--results", type=Path, help="default: export/FRONTIER_<model>.md (+ .json)")
    p.add_argument("--data-dir", help="datasets folder (default: $KERAS_SSM_DATA_DIR or tfds)")
    p.add_argument("--limit", type=int, help="only the first N test images")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=200, help="timed runs per file, cell and round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--litert",
        action="store_true",
        help="also export every model to LiteRT (sparse storage) and time it in the same rounds",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    for name in ("rounds", "runs"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1; received {getattr(a, name)}")
    if a.warmup < 0 or (a.limit is not None and a.limit < 1):
        p.error(f"--warmup must be >= 0 and --limit >= 1; received {a.warmup}, {a.limit}")
    from keras_ssm.atomic import atomic_write_text, write_json
    from keras_ssm.export.bench import load_test_set
    from keras_ssm.training import cpu_description

    try:
        dense = dense_reference(a.model)
    except ValueError as err:
        p.error(f"--model: {err}")
    runs = a.signed_run or signed_runs(a.model)
    if not runs:
        p.error(f"no signed results folder with a model.ssm for {a.model!r} in {RESULTS}")
    metrics = {}
    for run in runs:
        if not (run / "metrics.json").is_file():
            p.error(f"--signed-run {run}: no metrics.json there")
        metrics[run] = json.loads((run / "metrics.json").read_text())
        trained = metrics[run].get("model")
        if trained != a.model:
            p.error(f"--signed-run {run} trained {trained!r}, not --model {a.model!r}")
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # folders are keyed (and exported) by their name
        p.error(f"two --signed-run folders share a name: {sorted(names)}")
    work = a.work_dir or ROOT / "runs" / "frontier" / a.model
    md = a.results or HERE / f"FRONTIER_{a.model}.md"
    start = time.perf_counter()
    entries = export_all(dense, metrics, work, litert=a.litert)
    dataset = entries[runs[0].name]["metrics"]["dataset"]
    x, y = load_test_set(dataset, a.data_dir, a.limit)
    acc = measure_accuracy(entries, x, y)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    runtimes = ("onnx", "litert") if a.litert else ("onnx",)
    latency = time_all(entries, x, a.rounds, a.runs, a.warmup, runtimes)
    timing_s, load_end = time.perf_counter() - t0, os.getloadavg()[0]
    run_rows = {}
    for run in runs:
        e = entries[run.name]
        files = e["manifest"]["files"]
        run_rows[run.name] = {
            "recipe": recipe_of(run),
            "source": os.path.relpath(run, ROOT),
            "remaining": float(e["metrics"]["remaining"]),
            "compact_bytes": int(files["model.ssm"]["bytes"]),
            "int8_onnx_bytes": int(files["model_int8.onnx"]["bytes"]),
            "fp32_onnx_bytes": int(files["model.onnx"]["bytes"]),
            **acc[run.name],
        }
    bad = [label for label, r in run_rows.items() if r["mismatches"] or r.get("litert_mismatches")]
    argv_text = " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    data_env = os.environ.get("KERAS_SSM_DATA_DIR") if a.data_dir is None else None
    env = f"KERAS_SSM_DATA_DIR={shlex.quote(data_env)} " if data_env else ""
    result = {
        "model": a.model,
        "dataset": dataset,
        "command": f"{env}python export/frontier.py {argv_text}".strip(),
        "test_images": len(y),
        "mismatch_note": (
            "the compact model and the ONNX file"
            + (" and the LiteRT file" if a.litert else "")
            + " agree on every image"
            if not bad
            else f"DISAGREE on some images: {', '.join(bad)}"
        ),
        "rounds": a.rounds,
        "timed_runs": a.runs,
        "warmup": a.warmup,
        "cpu": cpu_description(),
        "load": [load_start, load_end],
        "timing_s": timing_s,
        "wall_s": time.perf_counter() - start,
        "runs": run_rows,
    }
    for runtime, key in (("onnx", "latency_us"), ("litert", "latency_litert_us")):
        if runtime in latency:  # JSON keys are strings: the batch sizes too
            result[key] = {
                label: {s: {str(b): v for b, v in per.items()} for s, per in lat.items()}
                for label, lat in latency[runtime].items()
            }
    result["recipes"] = rows(result)[1]  # what export/summary.py puts in the README
    write_json(md.with_suffix(".json"), result)
    atomic_write_text(md, markdown(result))
    print(markdown(result))
    if bad:
        print(
            f"an exported file disagrees with the compact model: {', '.join(bad)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
