"""``ssm bench``: :func:`keras_ssm.export.bench_run` (accuracy, sizes, latency of the exports)."""

from __future__ import annotations

import argparse
from typing import Any

from keras_ssm.cli.args import add_data_dir, add_quiet, number, say


def run(args: argparse.Namespace) -> dict[str, Any]:
    from keras_ssm.export.bench import bench_run

    return bench_run(
        args.run,
        export_dir=args.export_dir,
        dataset=args.dataset,
        data_dir=args.data_dir,
        limit=args.limit,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        overwrite=args.force,
        progress=say(args.quiet),
    )


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench", help="accuracy, sizes and latency of a run's exported files"
    )
    bench.add_argument("run", help="run folder from `ssm train`, exported with `ssm export`")
    bench.add_argument("--export-dir", help="folder holding the exported files (RUN/export)")
    bench.add_argument("--dataset", help="default: the run's metrics.json")
    add_data_dir(bench)
    bench.add_argument("--limit", type=int, help="use only the first N test images")
    bench.add_argument(
        "--runs", type=int, default=100, help="timed runs per latency (median; at least 50)"
    )
    bench.add_argument(
        "--warmup",
        type=number(int, "warmup", 0, low_inclusive=True),
        default=20,
        help="untimed runs first",
    )
    bench.add_argument(
        "--threads",
        type=number(int, "threads", 1, low_inclusive=True),
        default=1,
        help="onnxruntime intra-op threads and LiteRT threads (default 1)",
    )
    bench.add_argument("--force", action="store_true", help="replace an existing bench.json")
    add_quiet(bench)
    bench.set_defaults(func=run)
