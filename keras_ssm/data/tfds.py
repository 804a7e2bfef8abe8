"""The tensorflow-datasets fallback, used only when no local files were found.

Prepared data in tfds' data dir (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) is used first;
a download is attempted only when :func:`network_available` says so (a 2-second socket probe
of :data:`PROBE_HOST`, skipped when ``KERAS_SSM_OFFLINE`` is set). tensorflow-datasets is
imported only here, and only when this fallback runs. Failures are never raised: each one is
appended to ``searched`` for the final :class:`~keras_ssm.data.DataNotFoundError`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_ssm.data.formats import finish
from keras_ssm.data.specs import SPLITS, Arrays, Spec, Split

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "OFFLINE_ENV",
    "PROBE_HOST",
    "PROBE_TIMEOUT_S",
    "load_from_tfds",
    "network_available",
    "tfds_arrays",
]

OFFLINE_ENV = "KERAS_SSM_OFFLINE"
PROBE_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 2.0


def load_from_tfds(spec: Spec, searched: list[str]) -> Arrays | None:
    """Arrays from tfds (prepared data first, then a download when online), else ``None``."""
    try:
        import tensorflow_datasets as tfds  # slow import: only when needed
    except ImportError as exc:
        searched.append(f"tensorflow-datasets: not importable ({exc})")
        return None
    tfds_dir = os.environ.get("TFDS_DATA_DIR") or str(tfds.core.constants.DATA_DIR)
    try:
        return tfds_arrays(tfds, spec, tfds_dir, download=False)
    except Exception as exc:  # tfds raises AssertionError and others when data is missing
        searched.append(
            f"tensorflow-datasets {spec.tfds_name!r} in {tfds_dir}: not prepared "
            f"({_first_line(exc)})"
        )
    online, why = network_available()
    if not online:
        searched.append(f"tensorflow-datasets download: skipped ({why})")
        return None
    try:
        return tfds_arrays(tfds, spec, tfds_dir, download=True)
    except Exception as exc:  # any download/prepare failure is reported, not raised
        searched.append(
            f"tensorflow-datasets download into {tfds_dir}: failed ({_first_line(exc)})"
        )
        return None


def tfds_arrays(tfds: Any, spec: Spec, data_dir: str, *, download: bool) -> Arrays:
    """Both splits of ``spec`` through ``tfds.load``, validated like local files."""
    datasets = tfds.load(
        spec.tfds_name,
        split=list(SPLITS),
        data_dir=data_dir,
        download=download,
        as_supervised=True,
    )
    where = f"tfds:{spec.tfds_name}"
    return tuple(  # type: ignore[return-value]
        finish(spec, _dataset_to_numpy(ds), f"{where}[{split}]")
        for ds, split in zip(datasets, SPLITS, strict=True)
    )


def _dataset_to_numpy(dataset: tf.data.Dataset) -> Split:
    # Batches of a fixed size: tfds' batch_size=-1 aborts the process on some mocked datasets.
    images, labels = [], []
    for x, y in dataset.batch(8192).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError("empty split")
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels)


def network_available(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether a download can be tried, with the reason; never blocks longer than ``timeout``."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False, f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    start = time.monotonic()
    host, port = PROBE_HOST
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} reachable"
    except OSError as exc:
        took = time.monotonic() - start
        return False, f"offline: {host}:{port} unreachable after {took:.2f} s ({exc})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
