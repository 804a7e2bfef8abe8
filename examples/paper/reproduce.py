"""Reproduce the paper's table: one :func:`keras_ssm.train` call per run (in this process),
then collect the finished runs' small files and tabulate them.

    # the rows: signed supermask (default recipe) + dense baseline, 3 seeds each
    python examples/paper/reproduce.py run --rows fcn --seeds 3
    # a sweep (the accuracy-vs-remaining frontier): the cross product of the values
    python examples/paper/reproduce.py run --rows fcn --recipe paper --masks signed --seeds 1 \
        --sweep weight-decay=1.25e-4,2.5e-4,5e-4 --sweep weight-scale=1,2
    # copy metrics.json + history.csv of finished runs into examples/paper/results/
    python examples/paper/reproduce.py collect
    # the Markdown table of every collected run, written into RESULTS.md
    python examples/paper/reproduce.py table --write examples/paper/RESULTS.md

Every run is a folder ``runs/paper/<model>_<mask>_<recipe>[_<overrides>]_s<seed>`` (model.keras,
metrics.json, history.csv, analysis.jsonl); finished runs are skipped and unfinished ones resume
from their backup, so the runner can be stopped and restarted.  Seeds are the paper's: 7531, ...
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# The paper's numbers (authors' README: means over all runs): dense %, signed %, remaining %.
PAPER = {
    ("fcn", "mnist"): (97.42, 97.48, 3.77),
    ("conv2", "cifar10"): (68.79, 68.37, 0.60),
    ("conv4", "cifar10"): (74.50, 77.40, 2.91),
    ("conv6", "cifar10"): (75.91, 79.17, 2.36),
    ("conv8", "cifar10"): (72.24, 80.91, 1.17),
    ("resnet20", "cifar10"): (84.91, 81.68, 21.13),
    ("resnet20x2", "cifar10"): (86.80, 84.42, 7.69),
    ("resnet20x3", "cifar10"): (87.32, 84.89, 4.06),
    ("resnet56", "cifar100"): (68.04, 60.01, 29.39),
    ("resnet110", "cifar100"): (62.70, 46.42, 20.64),
}
ROWS = [model for model, _ in PAPER]
FIRST_SEED = 7531
# --sweep FLAG -> (run-name tag, keras_ssm.train keyword, type)
SWEEPABLE = {
    "weight-decay": ("wd", "weight_decay", float),
    "weight-scale": ("ws", "weight_scale", float),
    "threshold": ("th", "threshold", float),
    "lr": ("lr", "lr", float),
    "unit-penalty": ("up", "unit_penalty", float),
    "warmup-epochs": ("wu", "warmup_epochs", float),
    "epochs": ("ep", "epochs", int),
}


def run_name(model: str, mask: str, recipe: str, seed: int, extra: dict[str, str]) -> str:
    tags = "".join(f"_{k}{v}" for k, v in sorted(extra.items()))
    return f"{model}_{mask}_{recipe}{tags}_s{seed}"


def _grid(sweeps: list[str]) -> list[dict[str, str]]:
    """``["weight-decay=1e-4,2e-4", "weight-scale=1,2"]`` -> the cross product as flag dicts."""
    grid: list[dict[str, str]] = [{}]
    for sweep in sweeps:
        flag, _, values = sweep.partition("=")
        if flag not in SWEEPABLE or not values:
            raise SystemExit(
                f"--sweep wants FLAG=V1,V2,... with FLAG one of {', '.join(SWEEPABLE)}; "
                f"got {sweep!r}"
            )
        grid = [{**point, flag: value} for point in grid for value in values.split(",")]
    return grid


def jobs(args: argparse.Namespace) -> list[tuple[Path, dict[str, Any]]]:
    """``(run folder, keras_ssm.train keyword arguments)`` for every run asked for."""
    todo = []
    for model in args.rows:
        for mask in args.masks:
            for point in _grid(args.sweep):
                if mask == "none" and point:
                    continue  # sweeps are over the mask's knobs
                if args.epochs:
                    point = {**point, "epochs": str(args.epochs)}
                tags = {SWEEPABLE[flag][0]: value for flag, value in point.items()}
                if args.precision != "auto":
                    tags["prec"] = args.precision
                for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):
                    out = Path(args.out) / run_name(model, mask, args.recipe, seed, tags)
                    kwargs: dict[str, Any] = {
                        "model": model,
                        "mask": mask,
                        "recipe": args.recipe,
                        "seed": seed,
                        "out": out,
                        "precision": args.precision,
                        "limit": args.limit,
                        "augment": True if args.augment else None,
                        "resume": True,
                        "verbose": 2,
                    }
                    for flag, value in point.items():
                        _, key, kind = SWEEPABLE[flag]
                        kwargs[key] = kind(value)
                    todo.append((out, kwargs))
    return todo


def cmd_run(args: argparse.Namespace) -> int:
    failed = 0
    for out, kwargs in jobs(args):
        if (out / "metrics.json").exists():
            print(f"[skip] {out} (finished)")
            continue
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "out")
        print(f"[run] {out}: keras_ssm.train({shown})", flush=True)
        if args.dry_run:
            continue
        import keras

        import keras_ssm

        keras.backend.clear_session()  # one process, many runs: free the previous graphs
        try:
            result = keras_ssm.train(**kwargs)
        except Exception:  # one failed run must not stop the others
            failed += 1
            print(f"[fail] {out}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            continue
        m = result.metrics
        remaining = f", remaining {m['remaining']:.2%}" if "remaining" in m else ""
        print(f"[done] {out}: accuracy {m['test_accuracy']:.2%}{remaining}", flush=True)
    return 1 if failed else 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Copy the small files of every finished run into ``--results`` (never the ``.keras``
    model); a masked run also gets its compact ``model.ssm`` (folded and shrunk, a few KB), from
    which anyone can re-export and re-time it."""
    for metrics in sorted(Path(args.out).glob("*/metrics.json")):
        dest = Path(args.results) / metrics.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "history.csv"):
            if (metrics.parent / name).is_file():
                shutil.copyfile(metrics.parent / name, dest / name)
        masked = "remaining" in json.loads(metrics.read_text(encoding="utf-8"))
        compact, model = dest / "model.ssm", metrics.parent / "model.keras"
        stale = not compact.exists() or compact.stat().st_mtime < model.stat().st_mtime
        if masked and not args.no_compact and stale:
            import keras

            from keras_ssm.export import export_run

            keras.backend.clear_session()  # the compact format exports on every backend
            export_run(metrics.parent, "compact", out_dir=dest, shrink=True, overwrite=True)
        print(f"[collect] {metrics.parent} -> {dest}")
    return 0


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _export_facts(run_folder: Path) -> tuple[int, int] | None:
    """``(params after shrink, compact bytes)`` of a collected run, when it has its export."""
    path = run_folder / "export.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc["shrink_report"]["params_after"], doc["files"]["model.ssm"]["bytes"]


def _train_seconds(run_folder: Path, metrics: dict) -> float:
    """A run's training time over all its sessions: ``train_time_s``, or (runs written before
    it existed) the sum of ``history.csv``'s ``epoch_time_s``; ``wall_time_s`` of a run
    without either (a resumed run's ``wall_time_s`` is its last session only)."""
    if "train_time_s" in metrics:
        return float(metrics["train_time_s"])
    from keras_ssm.run_dir import RunDir

    history = RunDir(run_folder).read_history()  # blank cells read as NaN
    times = [t for t in history.get("epoch_time_s", []) if not math.isnan(t)]
    return math.fsum(times) if times else float(metrics["wall_time_s"])


def table(results: Path) -> str:
    """The Markdown table of the runs under ``results`` (one row per run group, seeds pooled)."""
    groups: dict[str, list[tuple[dict, tuple[int, int] | None, float]]] = defaultdict(list)
    for path in sorted(Path(results).glob("*/metrics.json")):
        key = path.parent.name.rsplit("_s", 1)[0]
        metrics = json.loads(path.read_text())
        groups[key].append(
            (metrics, _export_facts(path.parent), _train_seconds(path.parent, metrics))
        )
    lines = [
        "| run (without seed) | mask | recipe: lr / wd / threshold / scale / unit penalty "
        "| precision | epochs | seeds | accuracy % | remaining % | params after shrink | compact "
        "bytes | paper (dense / signed / remaining) | training time / run | hardware, backend |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entries in groups.items():
        runs = [metrics for metrics, _, _ in entries]
        facts = [f for _, f, _ in entries if f is not None]
        first = runs[0]
        recipe = first["recipe"]
        acc = [100 * r["test_accuracy"] for r in runs]
        remaining = [100 * r["remaining"] for r in runs if "remaining" in r]
        paper = PAPER.get((first["model"], first["dataset"]))
        paper_text = "-" if paper is None else f"{paper[0]} / {paper[1]} / {paper[2]}%"
        warmup = recipe.get("warmup_epochs", 0.0)
        warmup_text = f", warm-up {warmup:g} epoch{'s' if warmup != 1 else ''}" if warmup else ""
        train_seconds = statistics.mean(seconds for _, _, seconds in entries)
        params = f"{statistics.mean(f[0] for f in facts):,.0f}" if facts else "-"
        compact = f"{statistics.mean(f[1] for f in facts):,.0f}" if facts else "-"
        lines.append(
            f"| {key} | {first['mask']} | {recipe['lr']} / {recipe['wd']:g} / "
            f"{recipe.get('threshold')} / {recipe.get('weight_scale', 1.0):g} / "
            f"{recipe.get('unit_penalty', 0.0):g}{warmup_text} | "
            f"{first.get('precision', 'float32')} | {first['epochs']} | {len(runs)} | "
            f"{_mean_std(acc)} | {_mean_std(remaining) if remaining else '-'} | {params} | "
            f"{compact} | {paper_text} | {_duration(train_seconds)} | {first['hardware']}, "
            f"{first['backend']} |"
        )
    return "\n".join(lines)


BEGIN, END = "<!-- results table: begin -->", "<!-- results table: end -->"


def cmd_table(args: argparse.Namespace) -> int:
    text = table(Path(args.results))
    print(text)
    if args.write:  # replace the generated block of a Markdown file (e.g. RESULTS.md)
        from keras_ssm.atomic import replace_block

        try:
            replace_block(args.write, BEGIN, END, text)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the runs (skips finished ones, resumes the rest)")
    run.add_argument("--rows", nargs="+", default=["fcn"], choices=ROWS)
    run.add_argument(
        "--masks",
        nargs="+",
        default=["signed", "none"],
        choices=["signed", "binary", "topk", "none"],
    )
    run.add_argument("--recipe", default="default", choices=["default", "paper"])
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--epochs", type=int, help="shorter schedules (label them as such)")
    run.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    run.add_argument("--limit", type=int, help="first N training/test images (quick runs)")
    run.add_argument("--augment", action="store_true", help="pad-4 random crop + flip")
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="FLAG=V1,V2",
        help=f"sweep one of {', '.join(SWEEPABLE)}, e.g. weight-decay=1e-4,2e-4 (repeatable)",
    )
    run.add_argument("--out", default="runs/paper")
    run.add_argument("--dry-run", action="store_true")
    run.set_defaults(func=cmd_run)
    collect = sub.add_parser("collect", help="copy finished runs' small files into results/")
    collect.add_argument("--out", default="runs/paper")
    collect.add_argument("--results", default=str(RESULTS))
    collect.add_argument("--no-compact", action="store_true", help="skip the model.ssm files")
    collect.set_defaults(func=cmd_collect)
    tab = sub.add_parser("table", help="print the Markdown table of the collected runs")
    tab.add_argument("--results", default=str(RESULTS))
    tab.add_argument("--write", help="also replace the generated table block in this file")
    tab.set_defaults(func=cmd_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
