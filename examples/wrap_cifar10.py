"""Wrap a stock Keras application in a signed supermask, train it on CIFAR-10, export and time it.

    KERAS_SSM_DATA_DIR=../shared/datasets python examples/wrap_cifar10.py --epochs 15 \\
        --results examples/results/wrap_mobilenetv2

What a user with a model of their own does, with the same data stream, seed and schedule
length every time: the stock model trained as it is (``dense``), ``keras_ssm.supermask(model)``
(``signed``), and ``keras_ssm.supermask(model, unit_penalty=P)`` (``signed_up<P>``,
structure-aware), the signed ones at the recipe's weight decay and at each ``--weight-decay``
(``signed_wd<W>``, ``signed_wd<W>_up<P>``; the decay on the scores is what pushes them into the
signed mask's hide band, so it sets how sparse the mask gets). Training: SGD with Nesterov
momentum, the zoo's convnet recipes (``keras_ssm.recipes.get("conv4", ...)``: dense lr 0.008 /
wd 7e-4, signed lr 0.05 / wd 5e-4), pad-and-crop + flip augmentation, the precision and
compilation ``keras_ssm.train`` would pick on this machine, BatchNorm statistics recomputed
after training. Each model is then exported
with ``keras_ssm.export.export_model(model, dir, shrink=True)`` (ONNX, LiteRT and the compact
``.ssm``, each verified against Keras), every file's accuracy is measured on the 10,000 test
images, and the ONNX and LiteRT files are timed at batch 1 and 64 (onnxruntime with default
session options, LiteRT with its default threads), all files taking turns in interleaved rounds.

Trained models stay in ``--work-dir`` (default ``runs/wrap_<app>``): run the script again and it
reuses them. ``--results`` gets ``results.json``, ``results.md``, each model's ``history.csv`` and
the signed models' compact ``.ssm`` files (a few KB).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_ssm
from keras_ssm import data, norms, recipes
from keras_ssm.atomic import atomic_write_text, save_model, write_json
from keras_ssm.export import export_model
from keras_ssm.export.bench import load_test_set
from keras_ssm.export.runtime import (
    accuracy_of,
    batch_of,
    file_sizes,
    interleaved_medians,
    litert_call,
    litert_predict,
    onnx_predict,
    ort_call,
)
from keras_ssm.training.precision import (
    cpu_description,
    policy_scope,
    resolve_jit,
    resolve_precision,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model: dense, or signed at a weight decay (``None``: the recipe's) with a
    unit penalty (0: none)."""

    masked: bool
    wd: float | None = None
    penalty: float = 0.0

    @property
    def name(self) -> str:
        if not self.masked:
            return "dense"
        wd = "" if self.wd is None else f"_wd{self.wd:g}"
        return f"signed{wd}" + (f"_up{self.penalty:g}" if self.penalty else "")


def variants(a: argparse.Namespace) -> list[Variant]:
    """dense, then signed with and without the unit penalty at every weight decay asked for;
    ``--skip`` drops some by name."""
    found = [Variant(False)]
    for wd in [None, *a.weight_decay]:
        found += [Variant(True, wd), Variant(True, wd, a.unit_penalty)]
    unknown = sorted(set(a.skip) - {v.name for v in found})
    if unknown:
        names = ", ".join(v.name for v in found)
        raise SystemExit(f"--skip {' '.join(unknown)}: no such variant; these run: {names}")
    return [v for v in found if v.name not in a.skip]


def build(app: str, alpha: float | None, variant: Variant) -> keras.Model:
    """The stock application (random weights, 10 classes, logits into softmax), wrapped as the
    variant says."""
    kwargs: dict[str, Any] = {"input_shape": (32, 32, 3), "weights": None, "classes": 10}
    if alpha is not None:
        kwargs["alpha"] = alpha
    model = getattr(keras.applications, app)(**kwargs)
    if not variant.masked:
        return model
    return keras_ssm.supermask(model, unit_penalty=variant.penalty)


def train_one(a: argparse.Namespace, variant: Variant, work: Path) -> tuple[keras.Model, dict]:
    """Train one variant (or load it when ``work/<name>/model.keras`` exists)."""
    run = work / variant.name
    path, info_path = run / "model.keras", run / "train.json"
    if path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if (info["epochs"], info.get("limit")) != (a.epochs, a.limit):
            raise SystemExit(
                f"{run} holds a model trained for {info['epochs']} epochs (limit "
                f"{info.get('limit')}), not {a.epochs} (limit {a.limit}): pass another "
                "--work-dir or remove it"
            )
        print(f"[wrap] {variant.name}: reusing {path}", flush=True)
        return keras.saving.load_model(path), info
    run.mkdir(parents=True, exist_ok=True)
    recipe = recipes.get("conv4", mask="signed" if variant.masked else None)
    recipe = dataclasses.replace(recipe, epochs=a.epochs, augment=True)
    if variant.wd is not None:
        recipe = dataclasses.replace(recipe, wd=variant.wd)
    precision = resolve_precision("auto", convolutional=True)
    jit = resolve_jit("auto", convolutional=True)
    keras.utils.set_random_seed(a.seed)
    train_data, steps = data.load_epochs(
        "cifar10", "train", seed=a.seed, batch_size=recipe.batch_size, augment=True,
        limit=a.limit,
    )  # fmt: skip
    test_data = data.load("cifar10", "test", batch_size=512, limit=a.limit)
    with policy_scope(precision):
        model = build(a.app, a.alpha, variant)
        model.compile(
            recipes.make_optimizer(recipe, steps),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
        start = time.perf_counter()
        history = model.fit(
            train_data,
            steps_per_epoch=steps,
            epochs=recipe.epochs,
            validation_data=test_data,
            shuffle=False,
            verbose=2,
        )
        wall = time.perf_counter() - start
        recalibrated = norms.recalibrate_batchnorm(model, train_data, 50)
    with policy_scope("float32"):  # saved in float32 (the trained variables are float32)
        save_model(model, path)
        model = keras.saving.load_model(path)
    rows = [dict(zip(history.history, values, strict=True))
            for values in zip(*history.history.values(), strict=True)]  # fmt: skip
    with (run / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", *history.history])
        writer.writeheader()
        writer.writerows({"epoch": i, **row} for i, row in enumerate(rows))
    info = {
        "variant": variant.name,
        "epochs": recipe.epochs,
        "limit": a.limit,
        "lr": recipe.lr,
        "weight_decay": recipe.wd,
        "unit_penalty": variant.penalty,
        "precision": precision,
        "jit_compile": jit,
        "wall_time_s": round(wall, 1),
        "batchnorm_recalibrated": recalibrated,
        "params": int(model.count_params()),
    }
    if variant.masked:
        info["remaining"] = float(keras_ssm.mask_stats(model)["remaining"])
    write_json(info_path, info)
    return model, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app", default="MobileNetV2", help="a keras.applications model")
    p.add_argument("--alpha", type=float, default=0.35, help="width (MobileNets); 0: none")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--unit-penalty", type=float, default=0.003)
    p.add_argument(
        "--weight-decay",
        type=float,
        nargs="*",
        default=[],
        help="more weight decays for the signed models (the recipe's is always run)",
    )
    p.add_argument("--skip", nargs="*", default=[], help="variants not to train, by name")
    p.add_argument("--seed", type=int, default=7531)
    p.add_argument("--limit", type=int, default=None, help="first N images (quick runs)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--results", type=Path, default=None, help="folder for the small files")
    a = p.parse_args(argv)
    a.alpha = a.alpha or None
    work = a.work_dir or ROOT / "runs" / f"wrap_{a.app.lower()}"
    x_test, y_test = load_test_set("cifar10", limit=a.limit)

    report: dict[str, Any] = {
        "command": "python examples/wrap_cifar10.py " + " ".join(sys.argv[1:] if argv is None
                                                                else argv),
        "app": a.app,
        "alpha": a.alpha,
        "machine": cpu_description(),
        "platform": platform.platform(),
        "variants": {},
    }  # fmt: skip
    files: dict[str, Path] = {}
    for v in variants(a):
        variant = v.name
        model, info = train_one(a, v, work)
        keras_acc = accuracy_of(model.predict(x_test, batch_size=512, verbose=0), y_test)
        out = work / variant / "export"
        export_model(model, out, ["onnx", "litert", "compact"], shrink=True, overwrite=True)
        entry = {**info, "keras_accuracy": keras_acc, "files": {}}
        for name, runtime in (("model.onnx", "onnx"), ("model.tflite", "litert")):
            predict = onnx_predict if runtime == "onnx" else litert_predict
            scores = predict(out / name, x_test, threads=None)
            entry["files"][name] = {
                "accuracy": accuracy_of(scores, y_test),
                **file_sizes(out / name),
            }
            files[f"{variant}/{name}"] = out / name
        entry["files"]["model.ssm"] = file_sizes(out / "model.ssm")
        report["variants"][variant] = entry
        print(f"[wrap] {variant}: {json.dumps(entry)}", flush=True)

    calls = {}
    for key, path in files.items():
        for batch in (1, 64):
            x = batch_of(x_test, batch)
            make = ort_call if path.suffix == ".onnx" else litert_call
            calls[f"{key}@{batch}"] = make(path, x, threads=None)
    load = os.getloadavg()[0]
    medians = interleaved_medians(calls, a.rounds, a.runs)
    report["latency"] = {
        key: {"median_us": float(np.median(v)), "rounds": v} for key, v in medians.items()
    }
    report["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    if a.results is not None:
        write_results(a.results, report, work)
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The results table: accuracy, size and speed of every file against the dense ONNX."""
    lat = report["latency"]
    dense = {b: lat[f"dense/model.onnx@{b}"]["median_us"] for b in (1, 64)}
    dense_bytes = report["variants"]["dense"]["files"]["model.onnx"]["bytes"]
    lines = [
        f"# {report['app']} (alpha {report['alpha']}) on CIFAR-10: dense vs keras_ssm.supermask",
        "",
        f"Produced by `{report['command']}` on {report['machine']}; 1-minute load average "
        f"{report['load_average'][0]} before and {report['load_average'][1]} after the timing.",
        "",
        "| model | epochs | Keras accuracy | remaining | params | file | file accuracy | bytes |"
        " x smaller | b1 us | b64 us | x faster b1 / b64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, e in report["variants"].items():
        remaining = f"{100 * e['remaining']:.2f}%" if "remaining" in e else "100%"
        for name, f in e["files"].items():
            key = f"{variant}/{name}"
            speed = ["-", "-", "-"]
            if f"{key}@1" in lat:
                b1, b64 = (lat[f"{key}@{b}"]["median_us"] for b in (1, 64))
                speed = [f"{b1:.0f}", f"{b64:.0f}", f"{dense[1] / b1:.2f} / {dense[64] / b64:.2f}"]
            acc = f"{100 * f['accuracy']:.2f}%" if "accuracy" in f else "-"
            lines.append(
                f"| {variant} | {e['epochs']} | {100 * e['keras_accuracy']:.2f}% | {remaining} "
                f"| {e['params']:,} | {name} | {acc} | {f['bytes']:,} "
                f"| {dense_bytes / f['bytes']:.1f} | {' | '.join(speed)} |"
            )
    lines += [
        "",
        "Speed: median over interleaved rounds of each round's median `session.run` (LiteRT: "
        "`set_tensor + invoke + get_tensor`), default threads; ratios against the dense ONNX "
        "file. `params`: the trained Keras model's (the masked ones count w0 and scores).",
        "Keras accuracy: after `keras_ssm.recalibrate_batchnorm` (50 batches); the per-epoch "
        "`val_accuracy` in the history files uses the moving statistics as training left them "
        "(keras.applications' MobileNetV2 uses BatchNorm momentum 0.999) and sits near 10%.",
    ]
    return "\n".join(lines) + "\n"


def write_results(dest: Path, report: dict[str, Any], work: Path) -> None:
    """results.json, results.md, each variant's history.csv and the signed compact files."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / "results.json", report)
    atomic_write_text(dest / "results.md", markdown(report))
    for variant in report["variants"]:
        shutil.copyfile(work / variant / "history.csv", dest / f"{variant}_history.csv")
        if variant != "dense":  # the signed models' compact files
            shutil.copyfile(work / variant / "export" / "model.ssm", dest / f"{variant}.ssm")


if __name__ == "__main__":
    sys.exit(main())
