"""``ssm summary``: :func:`keras_ssm.summary` of a run's model."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> None:
    import keras_ssm
    from keras_ssm.run_dir import open_run

    _, model, _ = open_run(args.run)
    keras_ssm.summary(model)


def register(subparsers: Any) -> None:
    summary = subparsers.add_parser("summary", help="print keras_ssm.summary of a run or .keras")
    summary.add_argument("run", help="run folder from `ssm train` (or a .keras file)")
    summary.set_defaults(func=run)
