"""``ssm``: build the parser from the subcommand modules; map user errors to one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from keras_ssm.cli import bench, evaluate, export, report, summary, train

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (train, evaluate, summary, export, bench, report)
# What a user can fix: a bad value, a missing or existing file.  Anything else is a bug: trace.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssm", description="Signed supermasks for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _start_tensorflow_quietly(init_devices: bool) -> None:
    """Start TensorFlow's devices without their C++ start-up lines (:mod:`keras_ssm.startup`);
    not before a multi-worker strategy, which must configure collectives first."""
    from keras_ssm.startup import silenced_stderr, wants_quiet

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if not init_devices or backend != "tensorflow" or not wants_quiet():
        return
    with silenced_stderr():
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()
        except Exception:  # a real problem shows again, loudly, where TensorFlow is used
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ssm``; a user mistake prints one line (``ssm CMD: error: ...``) and returns 2.

    Set ``KERAS_SSM_DEBUG=1`` to get the full traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _start_tensorflow_quietly(init_devices=getattr(args, "strategy", "none") != "multiworker")
    try:
        args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("KERAS_SSM_DEBUG"):
            raise
        message = " ".join(str(err).split())
        if len(message) > 600:
            message = message[:600] + " ... (KERAS_SSM_DEBUG=1 shows everything)"
        print(f"ssm {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
