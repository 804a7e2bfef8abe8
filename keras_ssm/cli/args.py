"""Argument types and arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["UsageError", "add_data_dir", "add_quiet", "add_verbose", "number", "say"]


class UsageError(ValueError):
    """A problem with what the user asked for; reported as one line, exit status 2."""


def number(
    kind: type, name: str, low: float, high: float | None = None, *, low_inclusive: bool = False
) -> Callable[[str], Any]:
    """An argparse type that parses ``kind`` and checks its range, naming the bad value.

    >>> number(int, "epochs", 0)("3")
    3
    >>> number(float, "threshold", 0, 1)("1.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: threshold must be in (0, 1); got '1.5'
    """
    span = f"{'[' if low_inclusive else '('}{low:g}, {'inf)' if high is None else f'{high:g})'}"

    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a{'n' if kind is int else ''} {kind.__name__}; got {text!r}"
            ) from None
        above = value >= low if low_inclusive else value > low
        if not (math.isfinite(value) and above and (high is None or value < high)):
            raise argparse.ArgumentTypeError(f"{name} must be in {span}; got {text!r}")
        return value

    return check


def add_data_dir(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "--data-dir", help=help or "folder with the dataset files (or KERAS_SSM_DATA_DIR)"
    )


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def say(quiet: bool) -> Callable[[str], None] | None:
    """A progress printer (flushed lines), or ``None`` when ``quiet``."""
    return None if quiet else (lambda message: print(message, flush=True))
