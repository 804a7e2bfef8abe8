"""Reproduce the paper's table, one ``ssm train`` command per run, and tabulate the results.

    # the rows: signed supermask (default recipe) + dense baseline, 3 seeds each
    python examples/paper/reproduce.py run --rows fcn --seeds 3
    # a sweep (the accuracy-vs-remaining frontier): the cross product of the values
    python examples/paper/reproduce.py run --rows fcn --recipe paper --masks signed --seeds 1 \
        --sweep weight-decay=1.25e-4,2.5e-4,5e-4 --sweep weight-scale=1,2
    # the Markdown table of every finished run under runs/paper
    python examples/paper/reproduce.py table

Every run is a folder ``runs/paper/<model>_<mask>_<recipe>[_<overrides>]_s<seed>`` written by
``ssm train`` (model.keras, metrics.json, history.csv); finished runs are skipped, so the runner
can be stopped and restarted.  Seeds are the paper's: 7531, 7532, ...
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

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


def run_name(model: str, mask: str, recipe: str, seed: int, extra: dict[str, str]) -> str:
    tags = "".join(f"_{k}{v}" for k, v in sorted(extra.items()))
    return f"{model}_{mask}_{recipe}{tags}_s{seed}"


def _grid(sweeps: list[str]) -> list[dict[str, str]]:
    """``["weight-decay=1e-4,2e-4", "weight-scale=1,2"]`` -> the cross product as flag dicts."""
    grid: list[dict[str, str]] = [{}]
    for sweep in sweeps:
        flag, _, values = sweep.partition("=")
        if not values:
            raise SystemExit(f"--sweep wants FLAG=V1,V2,...; got {sweep!r}")
        grid = [{**point, flag: value} for point in grid for value in values.split(",")]
    return grid


TAGS = {"weight-decay": "wd", "weight-scale": "ws", "threshold": "th", "lr": "lr", "epochs": "ep"}


def commands(args: argparse.Namespace) -> list[tuple[Path, list[str]]]:
    """The ``ssm train`` command of every run the arguments ask for."""
    jobs = []
    for model in args.rows:
        for mask in args.masks:
            for point in _grid(args.sweep):
                if mask == "none" and point:
                    continue  # sweeps are over the mask's knobs
                if args.epochs:
                    point = {**point, "epochs": str(args.epochs)}
                extra = {TAGS.get(flag, flag): value for flag, value in point.items()}
                for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):
                    out = Path(args.out) / run_name(model, mask, args.recipe, seed, extra)
                    cmd = [
                        "ssm",
                        "train",
                        "--model",
                        model,
                        "--mask",
                        mask,
                        "--recipe",
                        args.recipe,
                        "--seed",
                        str(seed),
                        "--out",
                        str(out),
                        "--verbose",
                        "2",
                    ]
                    for flag, value in point.items():
                        cmd += [f"--{flag}", value]
                    cmd += args.extra
                    jobs.append((out, cmd))
    return jobs


def cmd_run(args: argparse.Namespace) -> None:
    for out, cmd in commands(args):
        if (out / "metrics.json").exists():
            print(f"[skip] {out} (finished)")
            continue
        print("[run] " + shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{out}.log", "w") as log:
            # the `ssm` of this interpreter's environment
            argv = [sys.executable, "-m", "keras_ssm.cli", *cmd[1:]]
            code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            print(f"[fail] {out}: exit {code}, see {out}.log", file=sys.stderr)


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def cmd_table(args: argparse.Namespace) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in sorted(Path(args.out).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        key = path.parent.name.rsplit("_s", 1)[0]
        groups[key].append(metrics)
    print(
        "| run (without seed) | model | data | mask | recipe: lr / wd / threshold / scale | "
        "epochs | seeds | accuracy % | remaining % | paper (dense / signed / remaining) | "
        "wall s / run | hardware, backend |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, runs in groups.items():
        first = runs[0]
        recipe = first["recipe"]
        acc = [100 * r["test_accuracy"] for r in runs]
        remaining = [100 * r["remaining"] for r in runs if "remaining" in r]
        paper = PAPER.get((first["model"], first["dataset"]))
        paper_text = "-" if paper is None else f"{paper[0]} / {paper[1]} / {paper[2]}"
        print(
            f"| {key} | {first['model']} | {first['dataset']} | {first['mask']} | "
            f"{recipe['lr']} / {recipe['wd']:g} / {recipe.get('threshold')} / "
            f"{recipe.get('weight_scale', 1.0)} | {first['epochs']} | {len(runs)} | "
            f"{_mean_std(acc)} | {_mean_std(remaining) if remaining else '-'} | {paper_text} | "
            f"{statistics.mean(r['wall_time_s'] for r in runs):.0f} | "
            f"{first['hardware']}, {first['backend']} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the runs (skips finished ones)")
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
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="FLAG=V1,V2",
        help="sweep an ssm train flag, e.g. weight-decay=1e-4,2e-4 (repeatable)",
    )
    run.add_argument("--out", default="runs/paper")
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("extra", nargs=argparse.REMAINDER, help="more ssm train flags after --")
    run.set_defaults(func=cmd_run)
    table = sub.add_parser("table", help="print the Markdown table of finished runs")
    table.add_argument("--out", default="runs/paper")
    table.set_defaults(func=cmd_table)
    args = parser.parse_args(argv)
    if getattr(args, "extra", None) and args.extra[0] == "--":
        args.extra = args.extra[1:]
    args.func(args)


if __name__ == "__main__":
    main()
