"""TF-MOT magnitude-pruning baseline for the export benchmark (run in its OWN process).

TensorFlow Model Optimization 0.8.1 works only on tf_keras (Keras 2) models and importing it
switches ``tf.keras`` to tf_keras for the whole process, so ``export/benchmark.py`` runs this
script through ``subprocess``.  It builds the signed run's architecture as a dense tf_keras model
(:func:`twin`: the zoo's dense model -- the FCN or a Conv net -- layer by layer, with the dense
baseline's initial weights), trains it from scratch with ``prune_low_magnitude`` to the SAME
per-layer sparsity as a signed-supermask run (read from that run's ``metrics.json``) with the
dense baseline's optimizer and learning rate (``keras_ssm.recipes.get(model, mask=None)``: SGD,
Nesterov momentum, learning rate decaying x0.9 every 10 epochs) for the signed run's epochs,
with tf_keras' weight decay 5e-4 (``--weight-decay``; tf_keras multiplies it by the learning
rate: 5e-6 per step on the FCN).  The dense recipe's stronger decay (5e-4 per step) cost TF-MOT
accuracy: FCN at the signed default run's sparsity, 97.21% vs 98.04% with 5e-4; so the baseline
keeps the setting that serves it best.  It strips the pruning wrappers and writes into ``--out``:

* ``model.onnx`` (tf2onnx from the float32 tf_keras model, rewritten like every file of
  ``keras_ssm.export``: Dense layers as ``Gemm``, max-pooling before a monotone activation;
  :func:`keras_ssm.export.onnx.rewrite_for_onnxruntime`) and ``model.tflite`` (TFLite
  converter with ``Optimize.EXPERIMENTAL_SPARSITY``), each checked against tf_keras before it
  is kept;
* ``metrics.json``: test accuracy (float32), the sparsity actually reached per layer, the
  schedule, the precision it trained at.

It trains in float32 by default: under ``mixed_bfloat16`` TF-MOT's masks miss the target
sparsity (most likely because they are computed from the kernel's bfloat16 autocast copy, whose
many ties at the threshold they keep; a two-step Conv4 probe left 1.42% of the weights instead
of the signed run's 1.20%, dense1 pruned to 99.01% instead of 99.24%, where float32 reached every
layer's target exactly).
``--precision bfloat16`` (or ``auto``: bfloat16 for conv nets where the CPU has AMX or
AVX512-BF16, as ``keras_ssm.train`` picks) trains faster; ``metrics.json`` then says how far the
reached sparsity is from the target (``sparsity_shortfall``).  What is evaluated and exported is
a float32 copy either way.

``--from-dense RUN`` follows TF-MOT's own guide instead (prune a TRAINED model while
fine-tuning it): it starts from the dense run's trained weights (``RUN/model.keras``, e.g. the
benchmark's dense baseline) and fine-tunes for ``--epochs`` (default 20), the sparsity ramping
over the first ``--prune-fraction`` of them, at the learning rate where the dense run's schedule
ended (``lr0 * decay_rate ** (dense epochs / decay_epochs)``), decaying on at the same rate.
That costs a fifth of a from-scratch baseline on a convnet (20 epochs instead of 100 after the
dense run the benchmark trains anyway) and gives TF-MOT its usual, strongest setting.

A conv baseline trains for hours, so training backs up to ``--out/backup`` after every epoch
(tf_keras ``BackupAndRestore``: weights, pruning step, optimizer state and epoch counter): run
the same command again after an interruption and it continues from the last finished epoch
(``--force`` starts over); the backup is removed when training completes. ``metrics.json``
says ``resumed`` and ``wall_time_s`` is then the last session's training time.

    python export/tfmot_baseline.py --signed-run runs/paper/fcn_signed_default_s7531 \\
        --out runs/bench/fcn_tfmot
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf_keras in this process only

# the constructor arguments that carry over from a Keras 3 layer to its tf_keras twin
_ARGS = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
               "activation", "use_bias"),
    "Dense": ("units", "activation", "use_bias"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "Flatten": ("data_format",),
}  # fmt: skip


def twin(tf_keras: Any, model: Any) -> Any:
    """A tf_keras copy of a Keras 3 model that is a chain of stock layers (the zoo's dense FCN
    and Conv nets): same layer names, arguments and weights.

    Raises:
        ValueError: a layer other than Conv2D, Dense, MaxPooling2D and Flatten, or a branch.
    """
    inputs = tf_keras.Input(tuple(model.inputs[0].shape[1:]), name=model.layers[0].name)
    x, previous = inputs, model.layers[0]
    for layer in model.layers[1:]:
        kind = type(layer).__name__
        if kind not in _ARGS or layer.input is not previous.output:
            raise ValueError(
                f"tfmot_baseline builds chains of {', '.join(_ARGS)}; {model.name!r} has "
                f"{kind} {layer.name!r}" + ("" if kind in _ARGS else " (not supported)")
            )
        config = layer.get_config()
        args = {k: config[k] for k in _ARGS[kind] if k in config}
        x = getattr(tf_keras.layers, kind)(name=layer.name, **args)(x)
        previous = layer
    copy = tf_keras.Model(inputs, x, name=f"{model.name}_tfmot")
    for layer in model.layers[1:]:
        copy.get_layer(layer.name).set_weights([np.asarray(w) for w in layer.get_weights()])
    return copy


def target_sparsity(signed_metrics: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Per-layer sparsity (1 - remaining) of the signed run for each layer in ``names`` (the
    overall sparsity for a layer the run does not list)."""
    layers = {e["name"]: 1.0 - float(e["remaining"]) for e in signed_metrics.get("layers", [])}
    overall = 1.0 - float(signed_metrics["remaining"])
    return {name: layers.get(name, overall) for name in names}


def _atomic_write(path: Path, data: bytes, overwrite: bool) -> None:
    from keras_ssm.atomic import atomic_write_bytes

    atomic_write_bytes(path, data, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    """Train, prune, strip, export and check; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--signed-run", required=True, help="signed run folder (its metrics.json)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument(
        "--epochs", type=int, help="default: the signed run's epochs (20 with --from-dense)"
    )
    p.add_argument(
        "--from-dense",
        help="a finished dense run (its model.keras) to prune while fine-tuning, as TF-MOT's "
        "guide does (default: train from the dense baseline's initial weights)",
    )
    p.add_argument(
        "--prune-fraction",
        type=float,
        default=0.5,
        help="fraction of training over which sparsity ramps from 0 to the target",
    )
    p.add_argument("--frequency", type=int, default=100, help="pruning frequency (steps)")
    p.add_argument("--lr", type=float, help="default: the dense recipe's")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=5e-4,
        help="tf_keras SGD weight_decay (applied times the learning rate each step)",
    )
    p.add_argument("--batch-size", type=int, help="default: the dense recipe's")
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="float32",
        help="training precision (default float32: TF-MOT's masks from bfloat16 kernels miss the "
        "target sparsity; auto: bfloat16 for conv nets on a CPU with AMX or AVX512-BF16)",
    )
    p.add_argument("--seed", type=int, default=7531)
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N train/test images (quick checks)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    signed = json.loads((Path(args.signed_run) / "metrics.json").read_text())
    name = str(signed.get("model", "fcn"))
    epochs = args.epochs or (20 if args.from_dense else int(signed.get("epochs", 100)))
    out = Path(args.out)
    start_from = None if args.from_dense is None else Path(args.from_dense)
    start_metrics: dict[str, Any] = {}
    if start_from is not None:
        problem = ""
        if (
            not (start_from / "model.keras").is_file()
            or not (start_from / "metrics.json").is_file()
        ):
            problem = "holds no model.keras / metrics.json (a finished dense run)"
        else:
            start_metrics = json.loads((start_from / "metrics.json").read_text())
            kind = (start_metrics.get("mask"), start_metrics.get("model"))
            if kind[0] not in (None, "none") or kind[1] != name:
                problem = f"is a {kind[0]!r} {kind[1]!r} run, not a dense {name!r} run"
        if problem:
            print(f"tfmot_baseline: --from-dense {start_from} {problem}", file=sys.stderr)
            return 2
    if (out / "metrics.json").exists() and not args.force:
        print(f"tfmot_baseline: {out} already holds a run; pass --force", file=sys.stderr)
        return 2
    backup = out / "backup"
    if args.force and backup.exists():
        shutil.rmtree(backup)  # --force starts over
    resumed = backup.is_dir() and any(backup.iterdir())

    import keras  # Keras 3: the zoo's dense model, whose twin is trained here

    import keras_ssm
    from keras_ssm import data, recipes
    from keras_ssm.training.precision import resolve_precision

    dataset = signed.get("dataset", "mnist")
    (x_train, y_train), (x_test, y_test) = data.load_arrays(dataset, data_dir=args.data_dir)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    x_train, x_test = data.standardize_images(x_train), data.standardize_images(x_test)
    keras.utils.set_random_seed(args.seed)
    facts = data.info(dataset)
    if start_from is None:  # the dense baseline's initial weights
        dense = keras_ssm.models.get(
            name, mask=None, input_shape=facts["input_shape"], num_classes=facts["num_classes"]
        )
    else:  # its trained weights
        dense = keras.saving.load_model(start_from / "model.keras")
    recipe = recipes.get(name, mask=None)
    lr0 = args.lr if args.lr is not None else recipe.lr
    if start_from is not None and args.lr is None:  # where the dense run's schedule ended
        lr0 = recipe.lr * recipe.decay_rate ** (int(start_metrics["epochs"]) / recipe.decay_epochs)
    batch_size = args.batch_size or recipe.batch_size
    precision = resolve_precision(
        args.precision, convolutional=keras_ssm.models.is_convolutional(name)
    )
    out.mkdir(parents=True, exist_ok=True)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(args.seed)
    base = twin(tf_keras, dense)  # float32: the initial weights, and the final model's shape
    prunable = (tf_keras.layers.Conv2D, tf_keras.layers.Dense)
    kernels = [layer.name for layer in base.layers if isinstance(layer, prunable)]
    sparsity = target_sparsity(signed, kernels)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = steps_per_epoch * epochs
    f = args.frequency
    end_step = max(f, int(total * args.prune_fraction) // f * f)  # a multiple of frequency

    prune = tfmot.sparsity.keras.prune_low_magnitude
    poly = tfmot.sparsity.keras.PolynomialDecay
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[precision]
    tf_keras.mixed_precision.set_global_policy(policy)
    trained = twin(tf_keras, dense)  # built under the training policy

    def wrap(layer: Any) -> Any:
        if layer.name in sparsity:
            schedule = poly(
                initial_sparsity=0.0,
                final_sparsity=sparsity[layer.name],
                begin_step=0,
                end_step=end_step,
                frequency=f,
            )
            return prune(layer, pruning_schedule=schedule)
        return layer

    model = tf_keras.models.clone_model(trained, clone_function=wrap)
    decay = recipe.decay_epochs * steps_per_epoch
    lr = tf_keras.optimizers.schedules.ExponentialDecay(lr0, decay, recipe.decay_rate)
    optimizer = tf_keras.optimizers.SGD(
        lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=args.weight_decay
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    print(
        f"tfmot_baseline: {name}, {epochs} epochs at {precision}, sparsity ramp 0 -> "
        f"{', '.join(f'{k} {v:.4f}' for k, v in sparsity.items())} over steps 0..{end_step} "
        f"(frequency {f})",
        flush=True,
    )
    if resumed:
        print(f"tfmot_baseline: resuming from {backup}", flush=True)
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        # each pruning wrapper counts its steps in a weight, which the backup restores too
        callbacks=[
            tf_keras.callbacks.BackupAndRestore(str(backup)),
            tfmot.sparsity.keras.UpdatePruningStep(),
        ],
        verbose=2,
    )
    wall = time.perf_counter() - start
    shutil.rmtree(backup, ignore_errors=True)  # tf_keras empties it at the end; drop the folder
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    tf_keras.mixed_precision.set_global_policy("float32")
    final = base  # the float32 twin, holding the pruned weights
    final.set_weights([np.asarray(w, "float32") for w in stripped.get_weights()])
    final.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, acc = final.evaluate(x_test, y_test, batch_size=512, verbose=0)
    reached = {}
    kernels_size = nonzero = 0
    for layer in final.layers:
        if layer.name in sparsity:
            k = layer.get_weights()[0]
            reached[layer.name] = float(np.mean(k == 0))
            kernels_size += k.size
            nonzero += int(np.count_nonzero(k))

    # how far each layer's pruning fell short of its target (a bfloat16 run's masks keep ties)
    shortfall = {k: round(sparsity[k] - v, 6) for k, v in reached.items() if sparsity[k] - v > 1e-3}
    if shortfall:
        print(f"tfmot_baseline: WARNING: sparsity short of the target (target - reached): "
              f"{shortfall}", file=sys.stderr)  # fmt: skip

    # ONNX (tf2onnx from the tf_keras model) and TFLite, each checked before it is kept.
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    from keras_ssm.export import max_rel_error
    from keras_ssm.export.onnx import rewrite_for_onnxruntime

    probe = x_test[:64]
    want = final.predict(probe, verbose=0)
    spec = (tf.TensorSpec((None, *x_train.shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(final, input_signature=spec, opset=17)
    proto = rewrite_for_onnxruntime(proto)  # as for every file of keras_ssm.export
    onnx_data = proto.SerializeToString()
    sess = ort.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    err_onnx = max_rel_error(sess.run(None, {sess.get_inputs()[0].name: probe}), [want])
    converter = tf.lite.TFLiteConverter.from_keras_model(final)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    tfl = converter.convert()
    interp = Interpreter(model_content=tfl)
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(probe.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], probe)
    interp.invoke()
    err_tfl = max_rel_error([interp.get_tensor(interp.get_output_details()[0]["index"])], [want])
    if not (err_onnx <= 1e-4 and err_tfl <= 1e-4):
        print(
            f"tfmot_baseline: export differs from tf_keras (onnx {err_onnx:.3g}, "
            f"tflite {err_tfl:.3g}); nothing written",
            file=sys.stderr,
        )
        return 1
    _atomic_write(out / "model.onnx", onnx_data, args.force)
    _atomic_write(out / "model.tflite", tfl, args.force)
    metrics = {
        "method": "tfmot prune_low_magnitude + strip_pruning (tf_keras)",
        "model": name,
        "dataset": dataset,
        "precision": precision,
        "test_accuracy": float(acc),
        "epochs": epochs,
        "wall_time_s": round(wall, 1),
        "resumed": resumed,
        "target_sparsity": sparsity,
        "reached_sparsity": reached,
        "sparsity_shortfall": shortfall,
        "remaining": nonzero / kernels_size,
        "kernels": kernels_size,
        "nonzero": nonzero,
        "signed_run": str(args.signed_run),
        "from_dense": None
        if start_from is None
        else {
            "run": str(start_from),
            "epochs": start_metrics.get("epochs"),
            "test_accuracy": start_metrics.get("test_accuracy"),
        },
        "schedule": {
            "begin_step": 0,
            "end_step": end_step,
            "frequency": f,
            "steps_per_epoch": steps_per_epoch,
            "lr": lr0,
            "lr_decay": f"x{recipe.decay_rate} every {recipe.decay_epochs} epochs",
            "tf_keras_weight_decay": args.weight_decay,
            "weight_decay_per_step_at_lr0": args.weight_decay * lr0,
            "optimizer": f"SGD nesterov momentum {recipe.momentum}",
            "batch_size": batch_size,
        },
        "max_rel_error": {"onnx": err_onnx, "tflite": err_tfl},
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "tfmot": tfmot.__version__,
            "tf2onnx": tf2onnx.__version__,
        },
        "limit": args.limit,
    }
    _atomic_write(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode(), args.force)
    print(
        f"tfmot_baseline: test accuracy {acc:.4f}, remaining {nonzero / kernels_size:.4%}; "
        f"wrote {out}/model.onnx, model.tflite, metrics.json",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
