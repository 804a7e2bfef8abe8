"""Measuring a run's exported files: accuracy on the test set, sizes and latency.

:func:`bench_run` (what ``ssm bench`` calls) measures the artifacts that
:func:`keras_ssm.export.export_run` wrote: test accuracy under onnxruntime and LiteRT (and of
the ``.ssm`` file reloaded in Keras) next to the Keras model's, file sizes raw and gzip, and
latency at batch 1 and 64 (median of ``runs`` timed runs after warm-up, with the thread
settings recorded).  It writes ``export/bench.json``.

Sessions and timing come from :mod:`keras_ssm.export.runtime`, shared with the benchmark
harness in the repository's ``export/`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssm.atomic import write_json
from keras_ssm.export.runtime import (
    batch_of,
    file_sizes,
    keras_scores,
    library_versions,
    litert_latency,
    litert_predict,
    onnx_predict,
    ort_latency,
    summarize,
    thread_settings,
)

__all__ = ["ARTIFACTS", "BATCHES", "BENCH", "bench_run", "load_test_set"]

BENCH = "bench.json"
BATCHES = (1, 64)
ARTIFACTS = ("model.onnx", "model_int8.onnx", "model.tflite", "model.ssm")


def load_test_set(
    dataset: str, data_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The test split as ``(float32 NHWC images, int labels)``, standardized per image exactly
    like ``keras_ssm.data.load`` (what the models were trained and evaluated on)."""
    from keras_ssm import data

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer; got {limit}")
    _, (images, labels) = data.load_arrays(dataset, data_dir=data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return data.standardize_images(images), np.asarray(labels).astype(np.int64)


def bench_run(
    run: str | os.PathLike[str],
    *,
    export_dir: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    runs: int = 100,
    warmup: int = 20,
    threads: int = 1,
    overwrite: bool = False,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, sizes and latency of a run's exported files; writes ``bench.json`` beside
    them and returns its content."""
    from keras_ssm import wrap
    from keras_ssm.export.compact import load_compact
    from keras_ssm.run_dir import open_run

    if runs < 50:
        raise ValueError(f"runs (--runs) must be at least 50; got {runs}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit (--limit) must be a positive integer; got {limit}")
    if threads < 1 or warmup < 0:
        raise ValueError(f"threads must be >= 1 and warmup >= 0; got {threads}, {warmup}")
    say = progress or (lambda message: None)
    run_dir, model, metrics = open_run(run)
    src = Path(export_dir) if export_dir is not None else run_dir.export_path
    artifacts = [n for n in ARTIFACTS if (src / n).is_file()]
    if not artifacts:
        raise FileNotFoundError(f"no exported model in {src}: run `ssm export {run}` first")
    out = src / BENCH
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (ssm bench --force)")
    dataset = dataset or metrics.get("dataset")
    if dataset is None:
        raise ValueError("the run has no metrics.json naming its dataset; pass dataset (--dataset)")
    say(f"ssm bench: {src} on the {dataset} test set" + (f" (first {limit})" if limit else ""))
    x, y = load_test_set(dataset, data_dir, limit)
    keras_pred = np.argmax(keras_scores(wrap.to_float32(model), x), axis=-1)
    keras_acc = float(np.mean(keras_pred == y))
    say(f"  keras model.keras (float32): accuracy {keras_acc:.4f} on {len(y)} images")
    result: dict[str, Any] = {
        "run": str(run_dir.path),
        "export_dir": str(src),
        "dataset": dataset,
        "test_images": len(y),
        "keras_accuracy": keras_acc,
        "threads": thread_settings(threads),
        "runs": runs,
        "warmup": warmup,
        "artifacts": {},
    }
    for name in artifacts:
        path = src / name
        entry: dict[str, Any] = {**file_sizes(path)}
        if name.endswith(".onnx"):
            entry["runtime"] = "onnxruntime"
            scores = onnx_predict(path, x, threads)
            lat = {b: ort_latency(path, batch_of(x, b), runs, warmup, threads) for b in BATCHES}
        elif name.endswith(".tflite"):
            entry["runtime"] = "litert"
            scores = litert_predict(path, x, threads)
            lat = {b: litert_latency(path, batch_of(x, b), runs, warmup, threads) for b in BATCHES}
        else:
            entry["runtime"] = "keras (load_compact)"
            scores = keras_scores(load_compact(path), x)
            lat = {}
        pred = np.argmax(scores, axis=-1)
        entry["accuracy"] = float(np.mean(pred == y))
        entry["prediction_mismatches_vs_keras"] = int(np.sum(pred != keras_pred))
        entry["latency"] = {f"batch{b}": summarize(t) for b, t in lat.items()}
        result["artifacts"][name] = entry
        line = (
            f"  {name:<16} {entry['bytes']:>10,} B ({entry['gzip_bytes']:,} gzip)  "
            f"accuracy {entry['accuracy']:.4f} ({entry['prediction_mismatches_vs_keras']} "
            "mismatches vs Keras)"
        )
        for key, s in entry["latency"].items():
            line += f"  {key} {s['median_us']:.1f} us"
        say(line)
    result["versions"] = library_versions()
    write_json(out, result, overwrite=overwrite)
    say(f"ssm bench: wrote {out}")
    return result
