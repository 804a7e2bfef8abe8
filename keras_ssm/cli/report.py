"""``ssm report``: :func:`keras_ssm.report.make_report` (PNGs + one HTML page per run set).

ssm report runs/fcn                                  # -> runs/fcn/report/report.html
ssm report runs/sweep/fcn_wd* --out runs/sweep/report
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from keras_ssm.cli.args import UsageError, add_data_dir


def run(args: argparse.Namespace) -> dict[str, Any]:
    from keras_ssm.report import make_report

    if args.out is None:
        if len(args.runs) > 1:
            raise UsageError("several runs need --out DIR (where the report goes)")
        out = Path(args.runs[0]) / "report"
    else:
        out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    result = make_report(args.runs, out, data_dir=args.data_dir, use_data=not args.no_data)
    if not args.quiet:
        print(
            f"ssm report: wrote {result['html']} and {len(result['images'])} PNGs "
            f"in {result['seconds']:.1f} s"
        )
    return result


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report", help="pictures of which weights matter: PNGs and one HTML page for run folders"
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of `ssm train`")
    report.add_argument("--out", help="folder for the report (default with one run: RUN/report)")
    add_data_dir(report, "dataset folder for the mean input image (or KERAS_SSM_DATA_DIR)")
    report.add_argument(
        "--no-data", action="store_true", help="do not load the dataset (no mean image)"
    )
    report.add_argument("--quiet", action="store_true", help="no output line")
    report.set_defaults(func=run)
