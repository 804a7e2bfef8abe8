"""Callbacks the training function adds to every run."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras

from keras_ssm.atomic import atomic_write_text

__all__ = ["HistoryLog", "StopOnDivergence"]


class HistoryLog(keras.callbacks.Callback):
    """Every epoch's logs plus its wall seconds (``epoch_time_s``: training and validation),
    kept across a resume in a JSON file that is rewritten atomically after each epoch.

    >>> import tempfile
    >>> log = HistoryLog(Path(tempfile.mkdtemp()) / "history.json")
    >>> log.on_epoch_begin(0)
    >>> log.on_epoch_end(0, {"loss": 0.5})
    >>> sorted(log.history), log.history["loss"]
    (['epoch_time_s', 'loss'], [0.5])
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)
        self.history: dict[str, list[float]] = {}
        self.resumed_epochs = 0
        self._epoch_start = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        done = int(getattr(self.model, "_initial_epoch", None) or 0)  # set by BackupAndRestore
        if done and self.path is not None and self.path.is_file():
            self.history = {k: v[:done] for k, v in json.loads(self.path.read_text()).items()}
            self.resumed_epochs = done

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {**(logs or {}), "epoch_time_s": time.perf_counter() - self._epoch_start}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if self.path is not None and self.path.parent.is_dir():
            atomic_write_text(self.path, json.dumps(self.history))


class StopOnDivergence(keras.callbacks.Callback):
    """Stops ``fit`` at the first batch whose loss is not finite and remembers where, so that
    the caller can say so instead of training on NaN weights for the remaining epochs.

    >>> stop = StopOnDivergence()
    >>> stop.set_model(type("M", (), {"stop_training": False})())
    >>> stop.on_epoch_begin(2)
    >>> stop.on_train_batch_end(7, {"loss": float("nan")})
    >>> stop.diverged, stop.model.stop_training
    ((2, 7, nan), True)
    """

    # Keras may run it off the training thread: a per-batch callback that is not async-safe
    # would make every step wait for its logs on the host.
    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.diverged: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or self.diverged is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self.diverged = (self._epoch, batch, loss)
            self.model.stop_training = True
