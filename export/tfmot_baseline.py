"""TF-MOT magnitude-pruning baseline for the export benchmark (run in its OWN process).

TensorFlow Model Optimization 0.8.1 works only on tf_keras (Keras 2) models and importing it
switches ``tf.keras`` to tf_keras for the whole process, so ``export/benchmark.py`` runs this
script through ``subprocess``. It trains the paper's FCN (784-300-100-10, ELU, no biases,
softmax; the dense baseline's ``elu_uniform`` init and SGD recipe) from scratch with
``prune_low_magnitude`` to the SAME per-layer sparsity as a signed-supermask run (read from that
run's ``metrics.json``), strips the pruning wrappers and writes into ``--out``:

* ``model.onnx`` (tf2onnx from the tf_keras model) and ``model.tflite`` (TFLite converter with
  ``Optimize.EXPERIMENTAL_SPARSITY``), each checked against tf_keras before it is kept;
* ``metrics.json``: test accuracy, the sparsity actually reached per layer, the schedule.

    python export/tfmot_baseline.py --signed-run runs/sweep/fcn_wd1.5e-4_s7531 \\
        --out runs/bench/fcn_tfmot
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf_keras in this process only

LAYERS = (("dense1", 300, "elu"), ("dense2", 100, "elu"), ("output", 10, "softmax"))


def build(tf_keras: Any, input_shape: tuple[int, ...], seed: int) -> Any:
    """The FCN in tf_keras: same layer names, activations and init as keras_ssm's dense fcn."""
    inputs = tf_keras.Input(input_shape, name="image")
    x = tf_keras.layers.Flatten(name="flatten")(inputs)
    fan_in = int(np.prod(input_shape))
    for i, (name, units, act) in enumerate(LAYERS):
        limit = math.sqrt(4.5 / fan_in)  # keras_ssm "elu_uniform": U(+-sqrt(4.5 / fan_in))
        init = tf_keras.initializers.RandomUniform(-limit, limit, seed=seed + i)
        x = tf_keras.layers.Dense(
            units, activation=act, use_bias=False, name=name, kernel_initializer=init
        )(x)
        fan_in = units
    return tf_keras.Model(inputs, x, name="fcn_tfmot")


def target_sparsity(signed_metrics: dict[str, Any]) -> dict[str, float]:
    """Per-layer sparsity (1 - remaining) of the signed run, by layer name."""
    layers = {e["name"]: 1.0 - float(e["remaining"]) for e in signed_metrics.get("layers", [])}
    if all(name in layers for name, _, _ in LAYERS):
        return {name: layers[name] for name, _, _ in LAYERS}
    overall = 1.0 - float(signed_metrics["remaining"])
    return {name: overall for name, _, _ in LAYERS}


def _atomic_write(path: Path, data: bytes, overwrite: bool) -> None:
    from keras_ssm.atomic import atomic_write_bytes

    atomic_write_bytes(path, data, overwrite=overwrite)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def main(argv: list[str] | None = None) -> int:
    """Train, prune, strip, export and check; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--signed-run", required=True, help="signed run folder (its metrics.json)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--epochs", type=int, help="default: the signed run's epochs")
    p.add_argument(
        "--prune-fraction",
        type=float,
        default=0.5,
        help="fraction of training over which sparsity ramps from 0 to the target",
    )
    p.add_argument("--frequency", type=int, default=100, help="pruning frequency (steps)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=7531)
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N train/test images (quick checks)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    signed = json.loads((Path(args.signed_run) / "metrics.json").read_text())
    sparsity = target_sparsity(signed)
    epochs = args.epochs or int(signed.get("epochs", 100))
    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.force:
        print(f"tfmot_baseline: {out} already holds a run; pass --force", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from keras_ssm import data  # numpy-only loading; no Keras 3 model is built here

    tf_keras.utils.set_random_seed(args.seed)
    dataset = signed.get("dataset", "mnist")
    (x_train, y_train), (x_test, y_test) = data.load_arrays(dataset, data_dir=args.data_dir)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    x_train, x_test = data.standardize_images(x_train), data.standardize_images(x_test)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = steps_per_epoch * epochs
    f = args.frequency
    end_step = max(f, int(total * args.prune_fraction) // f * f)  # a multiple of frequency

    base = build(tf_keras, x_train.shape[1:], args.seed)
    prune = tfmot.sparsity.keras.prune_low_magnitude
    poly = tfmot.sparsity.keras.PolynomialDecay

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

    model = tf_keras.models.clone_model(base, clone_function=wrap)
    lr = tf_keras.optimizers.schedules.ExponentialDecay(args.lr, 10 * steps_per_epoch, 0.9)
    model.compile(
        tf_keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(
        f"tfmot_baseline: {epochs} epochs, sparsity ramp 0 -> "
        f"{', '.join(f'{k} {v:.4f}' for k, v in sparsity.items())} over steps 0..{end_step} "
        f"(frequency {f})",
        flush=True,
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=2,
    )
    wall = time.perf_counter() - start
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    stripped.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, acc = stripped.evaluate(x_test, y_test, batch_size=512, verbose=0)
    reached = {}
    for layer in stripped.layers:
        if layer.name in sparsity:
            k = layer.get_weights()[0]
            reached[layer.name] = float(np.mean(k == 0))
    kernels = sum(
        int(np.prod(layer.get_weights()[0].shape))
        for layer in stripped.layers
        if layer.name in sparsity
    )
    nonzero = sum(
        int(np.count_nonzero(layer.get_weights()[0]))
        for layer in stripped.layers
        if layer.name in sparsity
    )

    # ONNX (tf2onnx from the tf_keras model) and TFLite, each checked before it is kept.
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    probe = x_test[:64]
    want = stripped.predict(probe, verbose=0)
    spec = (tf.TensorSpec((None, *x_train.shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(stripped, input_signature=spec, opset=17)
    onnx_data = proto.SerializeToString()
    sess = ort.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    err_onnx = _rel_err(sess.run(None, {sess.get_inputs()[0].name: probe})[0], want)
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    tfl = converter.convert()
    interp = Interpreter(model_content=tfl)
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(probe.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], probe)
    interp.invoke()
    err_tfl = _rel_err(interp.get_tensor(interp.get_output_details()[0]["index"]), want)
    if not (err_onnx <= 1e-5 and err_tfl <= 1e-5):
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
        "dataset": dataset,
        "test_accuracy": float(acc),
        "epochs": epochs,
        "wall_time_s": round(wall, 1),
        "target_sparsity": sparsity,
        "reached_sparsity": reached,
        "remaining": nonzero / kernels,
        "kernels": kernels,
        "nonzero": nonzero,
        "signed_run": str(args.signed_run),
        "schedule": {
            "begin_step": 0,
            "end_step": end_step,
            "frequency": f,
            "steps_per_epoch": steps_per_epoch,
            "lr": args.lr,
            "lr_decay": "x0.9 every 10 epochs",
            "weight_decay": args.weight_decay,
            "optimizer": "SGD nesterov momentum 0.9",
            "batch_size": args.batch_size,
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
        f"tfmot_baseline: test accuracy {acc:.4f}, remaining {nonzero / kernels:.4%}; "
        f"wrote {out}/model.onnx, model.tflite, metrics.json",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
