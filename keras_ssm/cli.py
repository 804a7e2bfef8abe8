"""The ``ssm`` command line: ``ssm train``, ``ssm eval``, ``ssm summary``.

    ssm train --model fcn --dataset mnist --out runs/fcn        # the paper's FCN, tuned recipe
    ssm train --model conv6 --recipe paper --epochs 100 --out runs/conv6
    ssm eval runs/fcn
    ssm summary runs/fcn

Every file a command writes is complete or absent (written to a temporary file, then renamed).
Errors a user can fix exit with status 2 and one line that names the bad value.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from keras_ssm.atomic import atomic_write_text

MASK_CHOICES = ("signed", "binary", "topk", "none")


class UsageError(Exception):
    """A problem with what the user asked for; reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- helpers
def atomic_save_model(model: Any, path: Path) -> None:
    """``model.save`` to a temporary ``.keras`` file beside ``path``, then a rename."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")  # Keras wants .keras
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _versions() -> dict[str, str]:
    import numpy

    import keras_ssm

    versions = {
        "keras_ssm": keras_ssm.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    for name in ("tensorflow", "jax"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = module.__version__
    return versions


def _hardware() -> str:
    if keras.backend.backend() == "jax":
        import jax

        devices = jax.devices()
        return f"{len(devices)}x {devices[0].device_kind} ({devices[0].platform})"
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def _number(
    kind: type, name: str, low: float, high: float | None = None, *, low_inclusive: bool = False
) -> Any:
    """An argparse type that parses ``kind`` and checks its range, naming the bad value."""
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


# ----------------------------------------------------------------------------- train
class HistoryLog(keras.callbacks.Callback):
    """Keeps every epoch's logs (also across a resume) in a JSON file, rewritten atomically,
    with each epoch's wall seconds (training and validation) as ``epoch_time_s``."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.history: dict[str, list[float]] = {}
        self.resumed_epochs = 0
        self._epoch_start = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        done = int(getattr(self.model, "_initial_epoch", None) or 0)  # set by BackupAndRestore
        if done and self.path.is_file():
            self.history = {k: v[:done] for k, v in json.loads(self.path.read_text()).items()}
            self.resumed_epochs = done

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {**(logs or {}), "epoch_time_s": time.perf_counter() - self._epoch_start}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if self.path.parent.is_dir():
            atomic_write_text(self.path, json.dumps(self.history))


def _finished_epochs(backup: Path) -> int:
    """Epochs an interrupted run completed, from ``BackupAndRestore``'s metadata (0 if none)."""
    path = backup / "training_metadata.json"
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"the backup in {backup} is damaged ({path}: {err}); delete it") from err


def _strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for ``--strategy`` (``None`` for ``none``).  Made before
    any other TensorFlow op: collective ops must be configured at program start-up."""
    if name == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"--strategy {name} needs the TensorFlow backend (KERAS_BACKEND)")
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise UsageError("--strategy multiworker reads the cluster from TF_CONFIG, which is unset")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    existing = [name for name in ("model.keras", "metrics.json") if (out / name).exists()]
    if existing and not force:
        raise UsageError(
            f"--out {out} already holds a run ({', '.join(existing)}); choose another folder "
            "or pass --force to replace it"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", delete=True)
        probe.close()
    except OSError as err:
        raise UsageError(f"--out {out} is not writable: {err.strerror or err}") from err


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import keras_ssm
    from keras_ssm import data, models, recipes
    from keras_ssm.training import policy_scope, resolve_jit, resolve_precision

    out = Path(args.out)
    _prepare_out(out, args.force)
    mask = None if args.mask == "none" else args.mask
    dataset = args.dataset or models.default_dataset(args.model)
    recipe = recipes.get(args.model, mask=mask, variant=args.recipe)
    overrides = {
        key: value
        for key, value in (
            ("epochs", args.epochs),
            ("lr", args.lr),
            ("wd", args.weight_decay),
            ("threshold", args.threshold),
            ("batch_size", args.batch_size),
            ("weight_scale", args.weight_scale),
        )
        if value is not None
    }
    recipe = dataclasses.replace(recipe, **overrides)
    if args.augment:
        recipe = dataclasses.replace(recipe, augment=True)

    strategy = _strategy(args.strategy)
    keras.utils.set_random_seed(args.seed)
    if args.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    info = data.info(dataset)
    backup = out / "backup"
    if backup.exists() and not args.resume:
        raise UsageError(f"--out {out} holds an interrupted run ({backup}); pass --resume")
    # Epoch e's batches depend on (seed, e) alone, so a resumed run continues the same stream.
    train, steps = data.load_epochs(
        dataset,
        "train",
        seed=args.seed,
        first_epoch=_finished_epochs(backup) if args.resume else 0,
        batch_size=recipe.batch_size,
        augment=recipe.augment,
        data_dir=args.data_dir,
        limit=args.limit,
    )
    test = data.load(dataset, "test", batch_size=512, data_dir=args.data_dir, limit=args.limit)
    precision = resolve_precision(args.precision)
    jit = resolve_jit(args.jit)
    with policy_scope(precision):
        metrics = _fit(args, out, recipe, mask, info, strategy, backup, train, steps, test, jit)
    metrics["precision"] = precision
    metrics["jit_compile"] = jit
    model = metrics.pop("_model")
    # What is reported and deployed computes in float32 (fold: exact float32 w0 * M).
    deployed = keras_ssm.fold(model)
    deployed.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test_loss, test_accuracy = deployed.evaluate(test, verbose=0)
    metrics["test_accuracy"], metrics["test_loss"] = float(test_accuracy), float(test_loss)
    if mask is not None:
        stats = keras_ssm.mask_stats(model)
        metrics.update(
            remaining=stats["remaining"], flipped=stats["flipped"], layers=stats["layers"]
        )
    _write_history(out / "history.csv", metrics.pop("_history"))
    atomic_save_model(model, out / "model.keras")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    line = f"test accuracy {test_accuracy:.4f}"
    if mask is not None:
        line += f", remaining {metrics['remaining']:.4%}"
    wall = metrics["wall_time_s"]
    print(f"{line}; {wall:.0f} s; wrote {out}/model.keras, metrics.json, history.csv")
    return metrics


def _fit(
    args: argparse.Namespace,
    out: Path,
    recipe: Any,
    mask: str | None,
    info: dict[str, Any],
    strategy: Any,
    backup: Path,
    train: Any,
    steps: int,
    test: Any,
    jit: bool | str,
) -> dict[str, Any]:
    import keras_ssm
    from keras_ssm import models, recipes

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = models.get(
            args.model,
            **recipes.model_kwargs(
                recipe, mask=mask, num_classes=info["num_classes"], input_shape=info["input_shape"]
            ),
        )
        model.compile(
            recipes.make_optimizer(recipe, steps),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
    callbacks = recipes.make_callbacks(recipe)
    if mask is not None:
        from keras_ssm.analysis import MaskRecorder

        callbacks.insert(0, keras_ssm.MaskStatsCallback())
        callbacks.append(MaskRecorder(out))  # RUN/analysis.jsonl, for `ssm report`
    history_log = HistoryLog(backup / "history.json")
    if args.resume:  # restores weights, optimizer state and the epoch counter
        backup_cb = keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)
        callbacks = [backup_cb, history_log, *callbacks]
    else:
        callbacks = [*callbacks, history_log]
    start = time.perf_counter()
    if args.strategy == "multiworker":  # Keras 3's fit cannot drive MultiWorkerMirroredStrategy
        from keras_ssm.distributed import evaluate_distributed, fit_distributed

        fit_distributed(
            model,
            strategy,
            train,
            steps_per_epoch=steps,
            epochs=recipe.epochs,
            validation_data=test,
            callbacks=callbacks,
            verbose=args.verbose,
        )
        wall = time.perf_counter() - start
        result = evaluate_distributed(model, strategy, test)
        test_loss, test_accuracy = result["loss"], result["accuracy"]
    else:
        model.fit(
            train,
            steps_per_epoch=steps,
            epochs=recipe.epochs,
            validation_data=test,
            shuffle=False,
            callbacks=callbacks,
            verbose=args.verbose,
        )
        wall = time.perf_counter() - start
        test_loss, test_accuracy = model.evaluate(test, verbose=0)
    history = history_log.history
    epochs_run = len(history.get("loss", []))
    train_size = min(info["train_size"], args.limit or info["train_size"])

    metrics: dict[str, Any] = {
        "model": args.model,
        "dataset": info["name"],
        "mask": mask or "none",
        "test_accuracy": None,  # the float32 folded model's, filled in by the caller
        "test_loss": None,
        "test_accuracy_training_precision": float(test_accuracy),
        "test_loss_training_precision": float(test_loss),
        "epochs": epochs_run,
        "seed": args.seed,
        "wall_time_s": round(wall, 2),
        "images_per_s": round(epochs_run * train_size / wall, 1),
        "resumed": bool(args.resume and history_log.resumed_epochs),
        "backend": keras.backend.backend(),
        "hardware": _hardware(),
        "versions": _versions(),
        "recipe": dataclasses.asdict(recipe),
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "params": int(model.count_params()),
        "_model": model,
        "_history": history,
    }
    return metrics


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    """``history.csv``: one row per epoch, written atomically."""
    keys = list(history)
    lines = io.StringIO()
    writer = csv.writer(lines)
    writer.writerow(["epoch", *keys])
    for epoch, row in enumerate(zip(*(history[k] for k in keys), strict=True)):
        writer.writerow([epoch, *row])
    atomic_write_text(path, lines.getvalue())


# ----------------------------------------------------------------------------- eval / summary
def _load_run(run: str) -> tuple[Path, Any, dict[str, Any]]:
    import keras_ssm  # noqa: F401  (registers the masked layers)

    path = Path(run)
    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise UsageError(
            f"no model at {model_path}: expected a run folder from `ssm train` or a .keras file"
        )
    if not zipfile.is_zipfile(model_path):
        raise UsageError(f"cannot load {model_path}: not a .keras file (truncated or corrupt)")
    metrics_path = model_path.parent / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except ValueError as err:
        raise UsageError(f"cannot read {metrics_path}: {err}") from err
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as err:  # a truncated or foreign file: say which, not a deep trace
        raise UsageError(f"cannot load {model_path}: {type(err).__name__}: {err}") from err
    return model_path.parent, model, metrics


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    import keras_ssm
    from keras_ssm import data

    _, model, metrics = _load_run(args.run)
    dataset = args.dataset or metrics.get("dataset")
    if dataset is None:
        raise UsageError("the run has no metrics.json naming its dataset; pass --dataset")
    test = data.load(dataset, "test", batch_size=512, data_dir=args.data_dir, limit=args.limit)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # what we report
    loss, accuracy = model.evaluate(test, verbose=args.verbose)
    result = {"dataset": dataset, "test_accuracy": float(accuracy), "test_loss": float(loss)}
    try:
        result["remaining"] = keras_ssm.mask_stats(model)["remaining"]
    except ValueError:
        pass
    print(json.dumps(result))
    return result


def cmd_summary(args: argparse.Namespace) -> None:
    import keras_ssm

    _, model, _ = _load_run(args.run)
    keras_ssm.summary(model)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from keras_ssm import recipes
    from keras_ssm.training.precision import PRECISIONS

    parser = argparse.ArgumentParser(prog="ssm", description="Signed supermasks for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model of the zoo and write a run folder")
    train.add_argument("--model", required=True, choices=recipes.MODELS)
    train.add_argument(
        "--dataset",
        choices=("mnist", "fashion_mnist", "cifar10", "cifar100"),
        help="default: the model's dataset in the paper",
    )
    train.add_argument(
        "--mask",
        choices=MASK_CHOICES,
        default="signed",
        help="'none' trains the dense baseline (default: signed)",
    )
    train.add_argument(
        "--recipe",
        choices=recipes.VARIANTS,
        default="default",
        help="'paper' = the paper's literal hyperparameters",
    )
    train.add_argument("--epochs", type=_number(int, "epochs", 0))
    train.add_argument(
        "--seed", type=_number(int, "seed", 0, 2**32, low_inclusive=True), default=7531
    )
    train.add_argument("--lr", type=_number(float, "learning rate", 0))
    train.add_argument(
        "--weight-decay",
        type=_number(float, "weight decay", 0, low_inclusive=True),
        help="decoupled (SGDW) decay",
    )
    train.add_argument(
        "--threshold",
        type=_number(float, "threshold", 0, 1),
        help="signed mask threshold in (0, 1)",
    )
    train.add_argument("--batch-size", type=_number(int, "batch size", 0))
    train.add_argument(
        "--weight-scale",
        type=_number(float, "weight scale", 0),
        help="ELUS variance scale of the frozen weights (1: sqrt(3/fan_in), 2: sqrt(6/fan_in))",
    )
    train.add_argument("--augment", action="store_true", help="pad-4 random crop + flip")
    train.add_argument("--data-dir", help="folder with the dataset files (or KERAS_SSM_DATA_DIR)")
    train.add_argument(
        "--limit",
        type=_number(int, "limit", 0),
        help="use only the first N training and test examples (quick runs)",
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force XLA compilation of the train step on (--jit) or off (--no-jit); default: "
        "Keras' choice (no XLA on a TensorFlow CPU, where oneDNN is faster)",
    )
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training precision; auto: bfloat16 mixed precision on a CPU with AMX/AVX512-BF16 "
        "(TensorFlow), else float32. Reported accuracy is always the float32 folded model's",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow deterministic ops (slower; bit-repeatable on CPU)",
    )
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--force", action="store_true", help="replace an existing run in --out")
    train.add_argument(
        "--resume",
        action="store_true",
        help="back up every epoch to OUT/backup and continue an interrupted run from there",
    )
    train.add_argument(
        "--strategy",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="tf.distribute strategy: local devices, or the workers named in TF_CONFIG",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="re-evaluate a run folder on its test set")
    evaluate.add_argument("run")
    evaluate.add_argument("--dataset")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--limit", type=_number(int, "limit", 0))
    evaluate.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    evaluate.set_defaults(func=cmd_eval)

    summary = sub.add_parser("summary", help="print keras_ssm.summary of a run or .keras file")
    summary.add_argument("run")
    summary.set_defaults(func=cmd_summary)

    from keras_ssm.export.commands import register as register_export

    register_export(sub)  # ssm export, ssm bench
    from keras_ssm.report import register as register_report

    register_report(sub)  # ssm report
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ssm``; a user mistake prints one line (``ssm CMD: error: ...``) and returns 2.

    Set ``KERAS_SSM_DEBUG=1`` to get the full traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError) as err:
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
