"""The run folder: the one place that knows its file names and how to read and write them.

A run folder is what :func:`keras_ssm.train` (and ``ssm train``) writes::

    RUN/model.keras      the trained model (masked layers, training precision)
    RUN/metrics.json     test accuracy of the float32 folded model, remaining weights, recipe...
    RUN/history.csv      one row per epoch (losses, metrics, remaining, epoch_time_s)
    RUN/analysis.jsonl   per-epoch mask records (:class:`keras_ssm.analysis.MaskRecorder`)
    RUN/backup/          only while a ``resume=True`` run is unfinished
    RUN/export/          what :func:`keras_ssm.export.export_run` writes

Every problem with a folder is a :class:`RunFolderError` (a ``ValueError``) whose message names
the path and what is wrong; every write is atomic (:mod:`keras_ssm.atomic`).

>>> import tempfile
>>> run = RunDir(tempfile.mkdtemp())
>>> run.write_metrics({"test_accuracy": 0.98})
>>> run.read_metrics()
{'test_accuracy': 0.98}
>>> run.write_history({"loss": [0.5, 0.25], "epoch_time_s": [1.5, 1.25]})
>>> run.read_history()
{'epoch': [0.0, 1.0], 'loss': [0.5, 0.25], 'epoch_time_s': [1.5, 1.25]}
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from keras_ssm.atomic import atomic_write_text, save_model, write_json

__all__ = ["RunDir", "RunFolderError", "open_run"]


class RunFolderError(ValueError):
    """A run folder (or model file) that cannot be used as asked; the message says why."""


class RunDir:
    """A run folder at ``path`` (it need not exist yet)."""

    MODEL = "model.keras"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    ANALYSIS = "analysis.jsonl"
    BACKUP = "backup"
    EXPORT = "export"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # ------------------------------------------------------------------ paths
    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def analysis_path(self) -> Path:
        return self.path / self.ANALYSIS

    @property
    def backup_path(self) -> Path:
        return self.path / self.BACKUP

    @property
    def export_path(self) -> Path:
        return self.path / self.EXPORT

    def is_finished(self) -> bool:
        """Whether the folder holds a trained model or its metrics."""
        return self.model_path.is_file() or self.metrics_path.is_file()

    # ------------------------------------------------------------------ before training
    def prepare(self, overwrite: bool = False, resume: bool = False) -> None:
        """Create the folder for a new run and check it is writable.

        Refuses a folder that holds a finished run (unless ``overwrite``) and one that holds an
        interrupted run's backup (unless ``resume``).
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} exists and is not a directory")
        existing = [p.name for p in (self.model_path, self.metrics_path) if p.exists()]
        if existing and not overwrite:
            raise RunFolderError(
                f"{self.path} already holds a run ({', '.join(existing)}); choose another "
                "folder or pass overwrite=True (ssm train --force) to replace it"
            )
        if self.backup_path.exists() and not resume:
            raise RunFolderError(
                f"{self.path} holds an interrupted run ({self.backup_path}); pass resume=True "
                "(ssm train --resume) to continue it, or delete the folder"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe."):
                pass
        except OSError as err:
            raise RunFolderError(f"{self.path} is not writable: {err.strerror or err}") from err

    def finished_epochs(self) -> int:
        """Epochs an interrupted run completed, from ``BackupAndRestore``'s metadata (0: none)."""
        path = self.backup_path / "training_metadata.json"
        if not path.is_file():
            return 0
        try:
            return int(json.loads(path.read_text())["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            raise RunFolderError(
                f"the backup in {self.backup_path} is damaged ({path.name}: {err}); delete it"
            ) from err

    def discard_records(self) -> None:
        """Remove the per-epoch records of a run that will not finish (a diverged one), so that
        the folder holds nothing of it; the folder itself stays."""
        self.analysis_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def save_model(self, model: Any) -> None:
        save_model(model, self.model_path)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)

    def write_history(self, history: dict[str, list[float]]) -> None:
        """``history.csv``: an ``epoch`` column, then one column per key, one row per epoch."""
        keys = list(history)
        lines = io.StringIO()
        writer = csv.writer(lines, lineterminator="\n")
        writer.writerow(["epoch", *keys])
        for epoch, row in enumerate(zip(*(history[k] for k in keys), strict=True)):
            writer.writerow([epoch, *row])
        atomic_write_text(self.history_path, lines.getvalue())

    # ------------------------------------------------------------------ reading
    def read_metrics(self, required: bool = False) -> dict[str, Any]:
        """``metrics.json`` as a dict (``{}`` when absent, unless ``required``)."""
        if not self.metrics_path.is_file():
            if required:
                raise RunFolderError(f"{self.path} has no {self.METRICS}")
            return {}
        try:
            metrics = json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise RunFolderError(f"cannot read {self.metrics_path}: {err}") from err
        if not isinstance(metrics, dict):
            raise RunFolderError(f"{self.metrics_path} does not hold a JSON object")
        return metrics

    def read_history(self) -> dict[str, list[float]]:
        """``history.csv`` as ``{column: [float per epoch]}`` (``{}`` when absent)."""
        if not self.history_path.is_file():
            return {}
        with self.history_path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return {key: [_float(row[key]) for row in rows] for key in (rows[0] if rows else {})}

    def read_model(self) -> Any:
        """The run's ``model.keras`` (loaded with ``safe_mode=True``)."""
        return load_model_file(self.model_path)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def load_model_file(path: str | os.PathLike[str]) -> Any:
    """Load a ``.keras`` file with the masked layers registered, or say what is wrong with it."""
    import keras

    import keras_ssm.layers  # noqa: F401  (registers the masked layers)

    path = Path(path)
    if not path.is_file():
        raise RunFolderError(
            f"no model at {path}: expected a run folder from `ssm train` or a .keras file"
        )
    if not zipfile.is_zipfile(path):
        raise RunFolderError(f"cannot load {path}: not a .keras file (truncated or corrupt)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # a truncated or foreign file: say which, not a deep trace
        raise RunFolderError(f"cannot load {path}: {type(err).__name__}: {err}") from err


def open_run(run: str | os.PathLike[str]) -> tuple[RunDir, Any, dict[str, Any]]:
    """``(run_dir, model, metrics)`` of a run folder, or of a ``.keras`` file (its folder's
    ``metrics.json`` is read when present)."""
    path = Path(run)
    model_path = path / RunDir.MODEL if path.is_dir() else path
    run_dir = RunDir(model_path.parent)
    metrics = run_dir.read_metrics()
    return run_dir, load_model_file(model_path), metrics
