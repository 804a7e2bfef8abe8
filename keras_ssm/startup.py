"""Quiet start-up: TensorFlow 2.21 prints its start-up lines (absl, oneDNN, CUDA probing) from
C++ straight to the process' stderr, ignoring ``TF_CPP_MIN_LOG_LEVEL``.  This module (which
imports nothing but the standard library) sends file descriptor 2 to /dev/null around the
steps that print them: importing Keras (and so its backend) and TensorFlow's device start.

Python exceptions are not affected.  ``KERAS_SSM_DEBUG=1`` or ``TF_CPP_MIN_LOG_LEVEL=0`` keep
the lines.

>>> with silenced_stderr():
...     print("stdout is untouched")
stdout is untouched
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["silenced_stderr", "wants_quiet"]


def wants_quiet() -> bool:
    """Whether the environment asks for TensorFlow's start-up lines to be hidden."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return level not in ("", "0") and not os.environ.get("KERAS_SSM_DEBUG")


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Send the process' stderr (file descriptor 2, C++ included) to /dev/null in the block."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
