"""``ssm export``: :func:`keras_ssm.export.export_run` (fold, shrink, ONNX / LiteRT / .ssm).

ssm export runs/fcn --format onnx,litert,compact --shrink --int8
ssm export runs/fcn --format onnx --shrink --int8 --code-bits 2     # 2-bit codes: model_int2.onnx
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_ssm.cli.args import add_quiet, number, say


def run(args: argparse.Namespace) -> dict[str, Any]:
    from keras_ssm.export.pipeline import export_run

    progress = say(args.quiet)
    report = export_run(
        args.run,
        args.format,
        out_dir=args.out_dir,
        shrink=args.shrink,
        int8=args.int8,
        code_bits=args.code_bits,
        opset=args.opset,
        channel_multiple=args.channel_multiple,
        overwrite=args.force,
        progress=progress,
    )
    if progress is not None:
        written = len(report["files"]) + 1
        progress(f"ssm export: wrote {written} files in {report['seconds']:.1f} s")
    return report


def register(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export", help="fold a run's model and write ONNX / LiteRT / compact .ssm files"
    )
    export.add_argument(
        "run",
        help="run folder from `ssm train`, a .keras or .ssm file, or a results folder that "
        "keeps the compact model.ssm (examples/paper/results/<run>)",
    )
    export.add_argument(
        "--format",
        default="onnx,litert,compact",
        help="comma-separated: onnx, litert (tflite), compact (ssm); default: all three",
    )
    export.add_argument(
        "--shrink", action="store_true", help="remove units that can no longer matter first"
    )
    export.add_argument(
        "--int8", action="store_true", help="also write model_int8.onnx (exact int8 weights)"
    )
    export.add_argument(
        "--code-bits",
        type=int,
        choices=(8, 4, 2),
        default=8,
        help="bits per weight code in the --int8 file: 8 (model_int8.onnx, any opset; "
        "default), 4 (model_int4.onnx, opset 21) or 2 (model_int2.onnx, opset 25)",
    )
    export.add_argument(
        "--opset",
        type=number(int, "opset", 12, 22, low_inclusive=True),
        default=17,
        help="ONNX opset (default 17)",
    )
    export.add_argument(
        "--channel-multiple",
        type=number(int, "channel multiple", 0, low_inclusive=True),
        default=16,
        help="with --shrink, the ONNX files pad shrunk convolutions feeding another one with "
        "zero filters to a multiple of this (onnxruntime's fast blocked convolutions need it; "
        "default 16, 0: off)",
    )
    export.add_argument("--out-dir", help="destination folder (default: RUN/export)")
    export.add_argument("--force", action="store_true", help="replace existing files")
    add_quiet(export)
    export.set_defaults(func=run)
