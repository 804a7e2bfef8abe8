"""``keras_ssm.train``: train a model of the zoo on a dataset with a recipe, in one call.

>>> import keras_ssm
>>> result = keras_ssm.train("fcn", "mnist", epochs=1, limit=256, verbose=0)  # doctest: +SKIP
>>> result.metrics["test_accuracy"], result.metrics["remaining"]               # doctest: +SKIP
(0.52, 0.6)

The same function runs behind ``ssm train``, ``examples/paper/reproduce.py`` and the
benchmarks.  With ``out=`` it writes a run folder (:class:`keras_ssm.training.RunDir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras

from keras_ssm.run_dir import RunDir
from keras_ssm.training.callbacks import HistoryLog, StopOnDivergence
from keras_ssm.training.precision import (
    cpu_description,
    policy_scope,
    resolve_jit,
    resolve_precision,
)

__all__ = ["STRATEGIES", "TrainResult", "make_strategy", "train"]

STRATEGIES = ("none", "mirrored", "multiworker")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (masked layers; computes at the training precision).
        history: ``{metric: [value per epoch]}``, with ``epoch_time_s``.
        metrics: what ``metrics.json`` holds: ``test_accuracy`` of the float32 folded model,
            ``test_accuracy_training_precision``, ``remaining``, the recipe, timing, versions.
            Timing: ``wall_time_s`` is this call's ``fit``; ``train_time_s`` sums every epoch's
            ``epoch_time_s``, the epochs of earlier, resumed sessions included, and
            ``images_per_s`` divides every epoch's images by it.
        run_dir: the run folder written (``None`` without ``out``).
    """

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    run_dir: RunDir | None = None


def make_strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for ``name`` in :data:`STRATEGIES` (``None`` for
    ``"none"``).  Make it before any other TensorFlow op: collective ops are configured at
    program start-up."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}.")
    if name == "none":
        return None
    if name == "multiworker" and "TF_CONFIG" not in os.environ:
        raise ValueError("strategy multiworker reads the cluster from TF_CONFIG, which is unset")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"strategy={name!r} needs the TensorFlow backend; the current backend is "
            f"{keras.backend.backend()!r} (set KERAS_BACKEND=tensorflow)"
        )
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _count(dataset: Any) -> int:
    """Examples in a finite dataset of ``(x, y)`` batches."""
    return sum(int(y.shape[0]) for _, y in dataset)


def _is_multiworker(strategy: Any) -> bool:
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _versions() -> dict[str, str]:
    import numpy

    from keras_ssm import __version__

    versions = {
        "keras_ssm": __version__,
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
    return cpu_description()


def _recipe(model: str, mask: str | None, recipe: Any, overrides: dict[str, Any]) -> Any:
    from keras_ssm import recipes

    if isinstance(recipe, str):
        recipe = recipes.get(model, mask=mask, variant=recipe)
    elif not isinstance(recipe, recipes.Recipe):
        raise ValueError(
            f"recipe must be one of {', '.join(recipes.VARIANTS)} or a keras_ssm.recipes.Recipe; "
            f"got {recipe!r}"
        )
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def train(
    model: str,
    dataset: str | None = None,
    *,
    mask: str | None = "signed",
    recipe: Any = "default",
    out: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    weight_scale: float | None = None,
    unit_penalty: float | None = None,
    warmup_epochs: float | None = None,
    augment: bool | None = None,
    seed: int = 7531,
    precision: str = "auto",
    jit: bool | str | None = "auto",
    limit: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    strategy: str | Any = "none",
    resume: bool = False,
    overwrite: bool = False,
    deterministic: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    record_masks: bool = True,
    recalibrate_batches: int = 50,
) -> TrainResult:
    """Train ``model`` (a name of :data:`keras_ssm.models.MODELS`) on ``dataset``.

    Args:
        model: the zoo model, e.g. ``"fcn"``, ``"conv6"``, ``"resnet20"``.
        dataset: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"`` (default: the
            model's dataset in the paper).  Files come from ``data_dir``, ``KERAS_SSM_DATA_DIR``
            or tensorflow-datasets (see :mod:`keras_ssm.data`).
        mask: ``"signed"``, ``"binary"``, ``"topk"``, a :class:`keras_ssm.masks.Mask`, or
            ``None`` / ``"none"`` for the dense baseline.
        recipe: ``"default"``, ``"paper"`` or a :class:`keras_ssm.recipes.Recipe`.
        out: a run folder to write (``model.keras``, ``metrics.json``, ``history.csv``,
            ``analysis.jsonl``); ``None`` writes nothing.
        epochs, lr, weight_decay, threshold, batch_size, weight_scale, unit_penalty,
        warmup_epochs, augment:
            override the recipe's values (``None``: keep them).
        seed: seeds weights, scores and the data order.
        precision: ``"auto"`` (bfloat16 mixed precision for convnets where the CPU runs it
            natively, else float32), ``"float32"`` or ``"bfloat16"``; see
            :mod:`keras_ssm.training.precision`.
            Reported accuracy is always the float32 folded model's.
        jit: XLA for the train step: ``True``, ``False`` or ``"auto"`` (Keras' choice, except
            XLA for the FCN on a TensorFlow CPU, where it is faster).
        limit: use only the first ``limit`` training and test examples (quick runs).
        strategy: ``"none"``, ``"mirrored"``, ``"multiworker"`` (``TF_CONFIG``) or a
            ``tf.distribute`` strategy.
        resume: back up every epoch to ``out/backup`` and continue an interrupted run from it
            (bit-identical to an uninterrupted run).
        overwrite: replace a finished run in ``out``.
        deterministic: TensorFlow's deterministic ops (slower; bit-repeatable on CPU).
        callbacks: more Keras callbacks for ``fit``.
        verbose: ``fit``'s verbosity (``"auto"``: a progress bar).
        record_masks: with ``out``, record per-epoch mask statistics to ``analysis.jsonl``.
        recalibrate_batches: after training, recompute the moving statistics of every
            BatchNormalization that trains over this many training batches
            (:func:`keras_ssm.recalibrate_batchnorm`) before the model is evaluated and saved;
            ``0`` keeps those training left.  They lag behind a mask that is still changing:
            signed ResNet20, 3 epochs on 10,000 CIFAR-10 images, 29.9% test accuracy as
            trained, 45.3% recalibrated.  Models without BatchNorm are not affected; skipped
            under a distribution strategy (recorded in ``metrics.json``).

    Returns:
        A :class:`TrainResult`.
    """
    from keras_ssm import data, models, norms, recipes, stats, wrap

    if resume and out is None:
        raise ValueError("resume=True needs out= (the run folder holding the backup)")
    if not isinstance(recalibrate_batches, int) or recalibrate_batches < 0:
        raise ValueError(
            f"recalibrate_batches must be a non-negative integer; got {recalibrate_batches!r}"
        )
    mask = None if mask in (None, "none") else mask
    dataset = dataset or models.default_dataset(model)
    info = data.info(dataset)
    overrides = {
        "epochs": epochs,
        "lr": lr,
        "wd": weight_decay,
        "threshold": threshold,
        "batch_size": batch_size,
        "weight_scale": weight_scale,
        "unit_penalty": unit_penalty,
        "warmup_epochs": warmup_epochs,
        "augment": augment,
    }
    recipe = _recipe(model, mask, recipe, overrides)
    run_dir = RunDir(out) if out is not None else None
    if run_dir is not None:
        run_dir.prepare(overwrite=overwrite, resume=resume)
    # Before any TensorFlow op: collective ops are configured at program start-up.
    dist = make_strategy(strategy) if isinstance(strategy, str) else strategy
    convolutional = models.is_convolutional(model)
    precision = resolve_precision(precision, convolutional=convolutional)
    jit = resolve_jit(jit, convolutional=convolutional)
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    # Epoch e's batches depend on (seed, e) alone, so a resumed run continues the same stream.
    first_epoch = run_dir.finished_epochs() if resume and run_dir is not None else 0
    train_data, steps = data.load_epochs(
        dataset,
        "train",
        seed=seed,
        first_epoch=first_epoch,
        batch_size=recipe.batch_size,
        augment=recipe.augment,
        data_dir=data_dir,
        limit=limit,
    )
    test_data = data.load(dataset, "test", batch_size=512, data_dir=data_dir, limit=limit)
    scope = dist.scope() if dist is not None else contextlib.nullcontext()
    with policy_scope(precision), scope:
        net = models.get(
            model,
            **recipes.model_kwargs(
                recipe, mask=mask, num_classes=info["num_classes"], input_shape=info["input_shape"]
            ),
        )
        net.compile(
            recipes.make_optimizer(recipe, steps),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
    fit_callbacks = [*recipes.make_callbacks(recipe), *callbacks]
    if mask is not None:
        fit_callbacks.insert(0, stats.MaskStatsCallback())
        if run_dir is not None and record_masks:
            from keras_ssm.analysis import MaskRecorder

            fit_callbacks.append(MaskRecorder(run_dir.path))
    history_log = HistoryLog(run_dir.backup_path / "history.json" if run_dir else None)
    divergence = StopOnDivergence(num_classes=info["num_classes"])
    fit_callbacks.append(divergence)
    if resume:  # restores weights, optimizer state and the epoch counter
        backup = keras.callbacks.BackupAndRestore(str(run_dir.backup_path), double_checkpoint=True)
        fit_callbacks = [backup, history_log, *fit_callbacks]
    else:
        fit_callbacks = [*fit_callbacks, history_log]

    recalibrated = 0  # BatchNorm layers whose moving statistics were recomputed after fit
    start = time.perf_counter()
    with policy_scope(precision):
        if _is_multiworker(dist):
            # Keras 3's fit cannot drive MultiWorkerMirroredStrategy (keras_ssm.distributed).
            from keras_ssm.distributed import evaluate_distributed, fit_distributed

            fit_distributed(
                net,
                dist,
                train_data,
                steps_per_epoch=steps,
                epochs=recipe.epochs,
                validation_data=test_data,
                callbacks=fit_callbacks,
                verbose=verbose,
            )
            wall = time.perf_counter() - start
            result = evaluate_distributed(net, dist, test_data)
            train_loss, train_accuracy = result["loss"], result["accuracy"]
        else:
            net.fit(
                train_data,
                steps_per_epoch=steps,
                epochs=recipe.epochs,
                validation_data=test_data,
                shuffle=False,  # the epoch-keyed stream is shuffled already
                callbacks=fit_callbacks,
                verbose=verbose,
            )
            wall = time.perf_counter() - start
            if divergence.diverged is None:  # else it raises below: nothing to evaluate
                if recalibrate_batches and dist is None:
                    recalibrated = norms.recalibrate_batchnorm(net, train_data, recalibrate_batches)
                train_loss, train_accuracy = net.evaluate(test_data, verbose=0)

    if divergence.diverged is not None:
        if run_dir is not None:
            run_dir.discard_records()
        scale = (
            f", weight scale {recipe.weight_scale:g}"
            if mask is not None and recipe.weight_scale != 1.0
            else ""
        )
        raise FloatingPointError(
            f"training {model!r} diverged: {divergence.describe()} (learning rate "
            f"{recipe.lr:g}, warm-up {recipe.warmup_epochs:g} epochs{scale}, precision "
            f"{precision}); nothing was "
            "written. Lower the learning rate (lr=, ssm train --lr) or warm it up "
            "(warmup_epochs=, --warmup-epochs)"
            + (" or lower the weight scale (weight_scale=, --weight-scale)" if scale else "")
            + " and train again."
        )
    # What is reported (and deployed) computes in float32: fold gives exact float32 w0 * M.
    deployed = wrap.fold(net)
    deployed.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test_loss, test_accuracy = deployed.evaluate(test_data, verbose=0)
    history = history_log.history
    epochs_run = len(history.get("loss", []))
    train_time = sum(history.get("epoch_time_s", [])) or wall  # every session of a resumed run
    # images per epoch: local files may hold fewer than the dataset's size (at most steps x batch)
    train_size = min(info["train_size"], limit or info["train_size"], steps * recipe.batch_size)
    test_size = _count(test_data)  # what was evaluated (local files may be smaller)
    metrics: dict[str, Any] = {
        "model": model,
        "dataset": info["name"],
        "mask": "none" if mask is None else getattr(mask, "name", mask),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "test_accuracy_training_precision": float(train_accuracy),
        "test_loss_training_precision": float(train_loss),
        "test_images": test_size,
        "precision": precision,
        "jit_compile": jit,
        "epochs": epochs_run,
        "seed": seed,
        "wall_time_s": round(wall, 2),
        "train_time_s": round(train_time, 2),
        "images_per_s": round(epochs_run * train_size / train_time, 1) if train_time > 0 else None,
        "resumed": bool(resume and history_log.resumed_epochs),
        "backend": keras.backend.backend(),
        "hardware": _hardware(),
        "versions": _versions(),
        "recipe": dataclasses.asdict(recipe),
        "config": {
            "limit": limit,
            "data_dir": None if data_dir is None else os.fspath(data_dir),
            "strategy": strategy if isinstance(strategy, str) else type(strategy).__name__,
            "deterministic": deterministic,
            "resume": resume,
        },
        "params": int(net.count_params()),
        "batchnorm_recalibrated": {
            "layers": recalibrated,
            "batches": recalibrate_batches if recalibrated else 0,
            "skipped": (
                "distribution strategy" if recalibrate_batches and dist is not None else None
            ),
        },
    }
    if mask is not None:
        counts = stats.mask_stats(net)
        metrics.update(
            remaining=counts["remaining"], flipped=counts["flipped"], layers=counts["layers"]
        )
    if run_dir is not None:
        run_dir.write_history(history)
        run_dir.save_model(net)
        run_dir.write_metrics(metrics)
    return TrainResult(model=net, history=history, metrics=metrics, run_dir=run_dir)
