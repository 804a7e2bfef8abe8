"""Running exported models: onnxruntime sessions, LiteRT interpreters, predictions and timing.

One place for every session the library, ``ssm bench`` and the benchmark harness in ``export/``
open, so their numbers are measured the same way.

>>> import numpy as np
>>> summarize([10.0, 12.0, 11.0, 30.0])["median_us"]
11.5
>>> accuracy_of(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
0.5
>>> batch_of(np.arange(3), 5).tolist()
[0, 1, 2, 0, 1]
"""

from __future__ import annotations

import gzip
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "accuracy_of",
    "batch_of",
    "file_sizes",
    "interleaved_medians",
    "keras_scores",
    "library_versions",
    "litert_call",
    "litert_interpreter",
    "litert_latency",
    "litert_predict",
    "litert_run",
    "onnx_predict",
    "ort_call",
    "ort_latency",
    "ort_session",
    "summarize",
    "thread_settings",
    "timed",
]

PathLike = str | os.PathLike[str]


def _has_dequantize(source: str | bytes) -> bool:
    """Whether an ONNX model holds ``DequantizeLinear`` nodes (the ``form="dequantize"`` int8)."""
    import onnx

    try:
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    except Exception:  # noqa: BLE001 - not a readable model: onnxruntime names the problem
        return False
    return any(node.op_type == "DequantizeLinear" for node in model.graph.node)


def ort_session(
    model: PathLike | bytes, exact: bool | None = None, threads: int | None = None
) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for a file path or serialized model.

    ``exact`` tells onnxruntime not to fuse weight-only ``DequantizeLinear -> MatMul`` pairs
    into its quantized kernels (which would also quantize the activations), so that an int8 file
    of ``form="dequantize"`` computes exactly what the float model computes.  ``None`` (the
    default) sets it only for files holding ``DequantizeLinear``: every other file, the default
    int8 form (Cast + Mul) included, runs under onnxruntime's default options, as a user's own
    session would.  ``threads`` pins ``intra_op_num_threads`` (one inter-op thread, sequential
    execution); ``None`` keeps onnxruntime's defaults (all cores).

    Example:
        >>> sess = ort_session("model.onnx", threads=1)          # doctest: +SKIP
        >>> y, = sess.run(None, {"input": x})                    # doctest: +SKIP
    """
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else os.fspath(model)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if exact or (exact is None and _has_dequantize(source)):
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def litert_interpreter(path: PathLike, threads: int | None = 1) -> Any:
    """A LiteRT interpreter for a ``.tflite`` file, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=os.fspath(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


def litert_run(interp: Any, x: np.ndarray) -> np.ndarray:
    """Run a single-input LiteRT interpreter on ``x`` (resizing its input when needed)."""
    (inp,) = interp.get_input_details()
    if tuple(inp["shape"]) != x.shape:
        interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def _batched(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 500
) -> np.ndarray:
    return np.concatenate([predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def onnx_predict(path: PathLike, x: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Outputs of an ONNX file under onnxruntime (see :func:`ort_session`), in batches of 500."""
    sess = ort_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    return _batched(lambda b: sess.run(None, {name: b})[0], x)


def litert_predict(path: PathLike, x: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Outputs of a ``.tflite`` file under the LiteRT interpreter, in batches of 500."""
    interp = litert_interpreter(path, threads)
    return _batched(lambda b: litert_run(interp, b), x)


def keras_scores(model: Any, x: np.ndarray) -> np.ndarray:
    """Outputs of a Keras model in inference mode, in batches of 500."""
    import keras

    return _batched(lambda b: keras.ops.convert_to_numpy(model(b, training=False)), x)


def accuracy_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class scores."""
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def file_sizes(path: PathLike) -> dict[str, int]:
    """``{"bytes": raw size, "gzip_bytes": size after gzip -9}`` of a file."""
    data = Path(path).read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9, mtime=0))}


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` rows of ``x`` (repeated when ``x`` is shorter), contiguous."""
    reps = -(-size // len(x))
    rows = np.concatenate([x] * reps)[:size] if reps > 1 else x[:size]
    return np.ascontiguousarray(rows)


def timed(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Wall times (microseconds) of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e3)
    return times


def summarize(times_us: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (microseconds) and the number of timed runs."""
    a = np.asarray(times_us, dtype=np.float64)
    return {
        "median_us": round(float(statistics.median(a)), 2),
        "p10_us": round(float(np.percentile(a, 10)), 2),
        "p90_us": round(float(np.percentile(a, 90)), 2),
        "runs": int(a.size),
    }


def interleaved_medians(
    calls: dict[Any, Callable[[], Any]], rounds: int, runs: int, warmup: int = 10
) -> dict[Any, list[float]]:
    """Time several calls side by side: in each of ``rounds`` rounds every call, in an order
    shuffled for that round (``random.Random(round)``), is timed ``runs`` times after ``warmup``
    untimed calls; returns each call's per-round medians (microseconds), so that a load change
    during the timing hits every call alike.

    >>> medians = interleaved_medians({"a": lambda: None, "b": lambda: None}, rounds=2, runs=3)
    >>> sorted(medians), [len(v) for v in medians.values()]
    (['a', 'b'], [2, 2])
    """
    import random

    per_round: dict[Any, list[float]] = {key: [] for key in calls}
    order = list(calls)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for key in order:
            per_round[key].append(statistics.median(timed(calls[key], runs, warmup)))
    return per_round


def ort_call(
    path: PathLike, x: np.ndarray, threads: int | None = 1, exact: bool | None = None
) -> Callable[[], Any]:
    """A zero-argument call running an ONNX file on ``x`` (one session, see
    :func:`ort_session`): what the latency functions time."""
    sess = ort_session(path, exact=exact, threads=threads)
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x)}
    return lambda: sess.run(None, feed)


def litert_call(path: PathLike, x: np.ndarray, threads: int | None = 1) -> Callable[[], Any]:
    """A zero-argument ``set_tensor + invoke + get_tensor`` of a ``.tflite`` file on ``x`` (the
    interpreter sized for ``x`` once): what the latency functions time."""
    interp = litert_interpreter(path, threads)
    litert_run(interp, x)
    (inp,) = interp.get_input_details()
    out = interp.get_output_details()[0]["index"]
    x = np.ascontiguousarray(x)

    def once() -> Any:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out)

    return once


def ort_latency(
    path: PathLike,
    x: np.ndarray,
    runs: int = 100,
    warmup: int = 20,
    threads: int | None = 1,
    exact: bool | None = None,
) -> list[float]:
    """Per-run wall times (microseconds) of ``session.run`` on ``x`` after ``warmup`` runs."""
    return timed(ort_call(path, x, threads, exact), runs, warmup)


def litert_latency(
    path: PathLike, x: np.ndarray, runs: int = 100, warmup: int = 20, threads: int | None = 1
) -> list[float]:
    """Per-run wall times (microseconds) of ``set_tensor + invoke + get_tensor`` on ``x``."""
    return timed(litert_call(path, x, threads), runs, warmup)


def thread_settings(threads: int | None) -> dict[str, Any]:
    """What the latency numbers ran under (recorded next to them)."""
    return {
        "onnxruntime": {
            "intra_op_num_threads": threads if threads is not None else "default (all cores)",
            "inter_op_num_threads": 1 if threads is not None else "default",
            "execution_mode": "ORT_SEQUENTIAL" if threads is not None else "default",
            "session.disable_quant_qdq": "1 only for DequantizeLinear (form='dequantize') files",
        },
        "litert": {"num_threads": threads, "delegate": "default (XNNPACK)"},
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def library_versions() -> dict[str, str]:
    """Versions of Python, numpy and every loaded library an export or timing depends on."""
    versions = {"numpy": np.__version__, "python": platform.python_version()}
    for name in ("keras", "tensorflow", "onnx", "onnxruntime", "tf2onnx", "ai_edge_litert"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = str(module.__version__)
    return versions
