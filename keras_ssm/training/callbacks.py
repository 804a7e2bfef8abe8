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
    """Stops ``fit`` when training has diverged and remembers where, so that the caller can
    say so instead of training a broken network for the remaining epochs.

    Two signs count as divergence:

    * a batch whose loss is not finite (``reason == "non-finite"``), at once;
    * for a classifier of ``num_classes`` classes, an epoch of at least ``min_steps`` batches
      whose mean training loss is above ``3 * ln(num_classes)`` while its accuracy is at most
      ``2 / num_classes`` (``reason == "stuck"``): saturated logits that are confidently wrong,
      the finite way a bfloat16 run diverges (the dense Conv6 at lr 0.008 without warm-up:
      loss 14.3, accuracy 10%).  A network that guesses uniformly has loss ``ln(num_classes)``.

    >>> stop = StopOnDivergence()
    >>> stop.set_model(type("M", (), {"stop_training": False})())
    >>> stop.on_epoch_begin(2)
    >>> stop.on_train_batch_end(7, {"loss": float("nan")})
    >>> stop.diverged, stop.reason, stop.model.stop_training
    ((2, 7, nan), 'non-finite', True)
    >>> stuck = StopOnDivergence(num_classes=10, min_steps=2)
    >>> stuck.set_model(type("M", (), {"stop_training": False})())
    >>> stuck.on_epoch_begin(0)
    >>> for batch in range(3):
    ...     stuck.on_train_batch_end(batch, {"loss": 14.3})
    >>> stuck.on_epoch_end(0, {"loss": 14.3, "accuracy": 0.1})
    >>> stuck.diverged, stuck.reason
    ((0, 2, 14.3), 'stuck')
    >>> stuck.describe()
    'after epoch 1 the training loss is 14.3 (a uniform guess: 2.3) at chance accuracy'
    """

    # Keras may run it off the training thread: a per-batch callback that is not async-safe
    # would make every step wait for its logs on the host.
    async_safe = True

    def __init__(self, num_classes: int | None = None, min_steps: int = 50) -> None:
        super().__init__()
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise ValueError(f"`num_classes` must be None or >= 2; got {num_classes!r}.")
        self.num_classes = num_classes
        self.min_steps = min_steps
        self.diverged: tuple[int, int, float] | None = None
        self.reason: str | None = None
        self._epoch = 0
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch, self._steps = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps = batch + 1
        loss = (logs or {}).get("loss")
        if loss is None or self.diverged is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self._stop(batch, loss, "non-finite")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.diverged is not None or self.num_classes is None or self._steps < self.min_steps:
            return
        loss, accuracy = logs.get("loss"), logs.get("accuracy")
        if loss is None or accuracy is None:
            return
        chance = math.log(self.num_classes)
        if float(loss) > 3 * chance and float(accuracy) <= 2 / self.num_classes:
            self._stop(self._steps - 1, float(loss), "stuck")

    def describe(self) -> str:
        """What was seen, in words (after a stop), e.g. for the caller's error message."""
        if self.diverged is None:
            return "no divergence"
        epoch, batch, loss = self.diverged
        if self.reason == "non-finite":
            return f"the loss became {loss} at epoch {epoch + 1}, batch {batch + 1}"
        uniform = math.log(self.num_classes or 2)
        return (
            f"after epoch {epoch + 1} the training loss is {loss:.3g} (a uniform guess: "
            f"{uniform:.3g}) at chance accuracy"
        )

    def _stop(self, batch: int, loss: float, reason: str) -> None:
        self.diverged, self.reason = (self._epoch, batch, loss), reason
        self.model.stop_training = True
