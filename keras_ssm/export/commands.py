"""The ``ssm export`` and ``ssm bench`` subcommands.

    ssm export runs/fcn --format onnx,litert,compact --shrink --int8
    ssm bench runs/fcn

``ssm export RUN_DIR`` loads ``RUN_DIR/model.keras``, folds it (:func:`keras_ssm.fold`; always
the first step), optionally shrinks it (:func:`keras_ssm.export.shrink`) and writes, into
``RUN_DIR/export/`` (or ``--out-dir``):

* ``model.onnx`` (and ``model_int8.onnx`` with ``--int8``: exact int8 ternary weights),
* ``model.tflite`` (LiteRT flatbuffer, sparse weight storage),
* ``model.ssm`` (the compact format),
* ``export.json``: what was written, sizes (raw and gzip), verification errors, shrink report.

Every file is verified against Keras before it is kept. The export is all-or-nothing: files are
built in a temporary folder beside the destination and moved in only when every format
succeeded; existing files are never replaced without ``--force``.

``ssm bench RUN_DIR`` measures those artifacts themselves: test accuracy under onnxruntime and
LiteRT (and of the ``.ssm`` file reloaded in Keras) next to the Keras model's, file sizes raw and
gzip, and latency at batch 1 and 64 (median of ``--runs`` timed runs after warm-up, with the
thread settings recorded). It writes ``export/bench.json``.

The measuring helpers (:func:`load_test_set`, :func:`ort_latency`, :func:`litert_latency`,
:func:`accuracy_of`, :func:`file_sizes`) are reused by the benchmark harness in ``export/``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "accuracy_of",
    "cmd_bench",
    "cmd_export",
    "file_sizes",
    "litert_latency",
    "litert_predict",
    "onnx_predict",
    "ort_latency",
    "register",
    "load_test_set",
]

FORMATS = ("onnx", "litert", "compact")
_ALIASES = {"tflite": "litert", "ssm": "compact"}
EXPORT_DIR = "export"
REPORT = "export.json"
BENCH = "bench.json"
BATCHES = (1, 64)


# ----------------------------------------------------------------------------- helpers
def _usage_error(message: str) -> Exception:
    """A :class:`keras_ssm.cli.UsageError` (imported lazily: cli imports this module)."""
    from keras_ssm.cli import UsageError

    return UsageError(message)


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, flush=True)


def _parse_formats(text: str) -> list[str]:
    """``"onnx,litert"`` -> ``["onnx", "litert"]`` (in :data:`FORMATS` order, no repeats)."""
    asked = [_ALIASES.get(p.strip().lower(), p.strip().lower()) for p in text.split(",")]
    asked = [p for p in asked if p]
    bad = [p for p in asked if p not in FORMATS]
    if bad or not asked:
        raise _usage_error(
            f"--format must be a comma-separated list of {', '.join(FORMATS)}; got {text!r}"
        )
    return [f for f in FORMATS if f in asked]


def _file_names(formats: Sequence[str], int8: bool) -> list[str]:
    names = []
    if "onnx" in formats:
        names.append("model.onnx")
        if int8:
            names.append("model_int8.onnx")
    if "litert" in formats:
        names.append("model.tflite")
    if "compact" in formats:
        names.append("model.ssm")
    return names


def file_sizes(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{"bytes": raw size, "gzip_bytes": size after gzip -9}`` of a file."""
    data = Path(path).read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9, mtime=0))}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolve_run(run: str) -> tuple[Path, Any, dict[str, Any]]:
    """``(run_dir, masked_model, metrics)`` of a run folder (or a ``.keras`` file)."""
    from keras_ssm.cli import _load_run

    return _load_run(run)


def _versions() -> dict[str, str]:
    import keras

    versions = {
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for name in ("tensorflow", "onnx", "onnxruntime", "tf2onnx", "ai_edge_litert"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = str(module.__version__)
    return versions


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary folder beside ``dest``, removed whatever happens."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(staged: Path, dest: Path, names: Sequence[str], overwrite: bool) -> None:
    """Move every staged file into ``dest``; without ``overwrite`` never replace a file."""
    dest.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [n for n in names if (dest / n).exists()]
        if clash:
            raise _usage_error(f"{dest} already holds {', '.join(clash)}; pass --force")
    from keras_ssm.atomic import place

    for name in names:
        try:
            place(staged / name, dest / name, overwrite=overwrite)
        except FileExistsError:
            raise _usage_error(f"{dest / name} appeared meanwhile; pass --force") from None
    for name in names:  # mkstemp made them 0600; give them the usual permissions
        with contextlib.suppress(OSError):
            os.chmod(dest / name, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


# ----------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    """``ssm export``: fold (and shrink) a run's model and write the requested formats."""
    import keras

    import keras_ssm
    from keras_ssm import export as ex
    from keras_ssm.export._verify import keras_outputs, max_rel_error, random_inputs

    formats = _parse_formats(args.format)
    if args.int8 and "onnx" not in formats:
        raise _usage_error("--int8 applies to the ONNX export: add onnx to --format")
    if keras.backend.backend() != "tensorflow":
        raise _usage_error(
            "ssm export needs the TensorFlow backend (set KERAS_BACKEND="
            f"tensorflow; the current backend is {keras.backend.backend()!r})"
        )
    run_dir, model, metrics = _resolve_run(args.run)
    dest = Path(args.out_dir) if args.out_dir else run_dir / EXPORT_DIR
    if dest.exists() and not dest.is_dir():
        raise _usage_error(f"{dest} exists and is not a directory")
    names = [*_file_names(formats, args.int8), REPORT]
    clash = [n for n in names if (dest / n).exists()]
    if clash and not args.force:
        raise _usage_error(f"{dest} already holds {', '.join(clash)}; pass --force to replace")
    quiet = args.quiet
    start = time.perf_counter()
    _say(f"ssm export: {run_dir} -> {dest} ({', '.join(names[:-1])})", quiet)
    report: dict[str, Any] = {
        "run": str(run_dir),
        "source": str(run_dir / "model.keras"),
        "dataset": metrics.get("dataset"),
        "keras_test_accuracy": metrics.get("test_accuracy"),
        "remaining": metrics.get("remaining"),
        "formats": formats,
        "shrink": args.shrink,
        "int8": args.int8,
        "files": {},
        "versions": {},
    }
    with _staging(dest) as tmp:
        _say("  fold: masked layers -> stock layers with kernels w0 * M", quiet)
        deployed = keras_ssm.fold(model)
        x = random_inputs(model, batch=8, seed=0)
        want = keras_outputs(model, x)
        report["fold_max_rel_error"] = max_rel_error(keras_outputs(deployed, x), want)
        report["params_folded"] = int(deployed.count_params())
        if args.shrink:
            deployed, shrink_report = ex.shrink(deployed)
            err = max_rel_error(keras_outputs(deployed, x), want)
            report["shrink_max_rel_error"] = err
            report["shrink_report"] = {
                "params_before": shrink_report.params_before,
                "params_after": shrink_report.params_after,
                "layers": [vars(e) for e in shrink_report.layers],
            }
            _say(
                f"  shrink: params {shrink_report.params_before} -> "
                f"{shrink_report.params_after} (max rel error {err:.2g})",
                quiet,
            )
        steps: list[tuple[str, Callable[[Path], Any]]] = []
        if "onnx" in formats:
            steps.append(("model.onnx", lambda p: ex.to_onnx(deployed, p, opset=args.opset)))
            if args.int8:
                steps.append(
                    (
                        "model_int8.onnx",
                        lambda p: ex.to_onnx(deployed, p, opset=args.opset, int8=True),
                    )
                )
        if "litert" in formats:
            steps.append(("model.tflite", lambda p: ex.to_tflite(deployed, p, sparse=True)))
        if "compact" in formats:
            steps.append(("model.ssm", lambda p: _save_compact_checked(deployed, p, x)))
        for i, (name, write) in enumerate(steps, start=1):
            t0 = time.perf_counter()
            _say(f"  [{i}/{len(steps)}] {name} ...", quiet)
            result = write(tmp / name)
            entry: dict[str, Any] = {
                **file_sizes(tmp / name),
                "sha256": _sha256(tmp / name),
                "max_rel_error": result.max_rel_error,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            quantized = result.details.get("quantized") if result.details else None
            if quantized:
                entry["int8_weights"] = [
                    {"name": q.name, "shape": list(q.shape), "scale": q.scale, "nonzero": q.nonzero}
                    for q in quantized
                ]
            report["files"][name] = entry
            _say(
                f"      {entry['bytes']:,} bytes ({entry['gzip_bytes']:,} gzip), "
                f"max rel error vs Keras {result.max_rel_error:.2g}",
                quiet,
            )
        report["versions"] = _versions()
        report["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / REPORT).write_text(_json_text(report), encoding="utf-8")
        _publish(tmp, dest, names, overwrite=args.force)
    _say(f"ssm export: wrote {len(names)} files to {dest} in {report['seconds']:.1f} s", quiet)
    return report


class _Checked:
    """A minimal ``ExportResult``-like record for the compact format."""

    def __init__(self, err: float) -> None:
        self.max_rel_error = err
        self.details: dict[str, Any] = {}


def _save_compact_checked(model: Any, path: Path, x: np.ndarray) -> _Checked:
    """Write ``model`` as ``.ssm`` and check that the reloaded model gives the same outputs."""
    from keras_ssm.export import ExportVerificationError, load_compact, save_compact
    from keras_ssm.export._verify import keras_outputs, max_rel_error

    save_compact(model, path)
    err = max_rel_error(keras_outputs(load_compact(path), x), keras_outputs(model, x))
    if not err <= 1e-6:
        path.unlink(missing_ok=True)
        raise ExportVerificationError(f"the .ssm file does not reproduce the model ({err:.3g})")
    return _Checked(err)


# ----------------------------------------------------------------------------- measuring
def load_test_set(
    dataset: str, data_dir: str | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The test split as ``(float32 NHWC images, int labels)``, standardized per image exactly
    like ``keras_ssm.data.load`` (what the models were trained and evaluated on)."""
    from keras_ssm import data

    _, (images, labels) = data.load_arrays(dataset, data_dir=data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return data.standardize_images(images), np.asarray(labels).astype(np.int64)


def _batched(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 500
) -> np.ndarray:
    return np.concatenate([predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def onnx_predict(path: str | os.PathLike[str], x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Class scores of an ONNX file under onnxruntime (exact session), in batches of 500."""
    sess = _ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return _batched(lambda b: sess.run(None, {name: b})[0], x)


def litert_predict(path: str | os.PathLike[str], x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Class scores of a ``.tflite`` file under the LiteRT interpreter, in batches of 500."""
    interp = _litert(path, threads)
    return _batched(lambda b: _litert_run(interp, b), x)


def accuracy_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class scores."""
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def _ort_session(path: str | os.PathLike[str], threads: int, exact: bool = True) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if exact:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def _litert(path: str | os.PathLike[str], threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=os.fspath(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


def _litert_run(interp: Any, x: np.ndarray) -> np.ndarray:
    (inp,) = interp.get_input_details()
    if tuple(inp["shape"]) != x.shape:
        interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def _timed(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
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


def ort_latency(
    path: str | os.PathLike[str],
    x: np.ndarray,
    runs: int = 100,
    warmup: int = 20,
    threads: int = 1,
    exact: bool = True,
) -> list[float]:
    """Per-run wall times (microseconds) of ``session.run`` on ``x`` after ``warmup`` runs."""
    sess = _ort_session(path, threads, exact=exact)
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x)}
    return _timed(lambda: sess.run(None, feed), runs, warmup)


def litert_latency(
    path: str | os.PathLike[str], x: np.ndarray, runs: int = 100, warmup: int = 20, threads: int = 1
) -> list[float]:
    """Per-run wall times (microseconds) of ``set_tensor + invoke + get_tensor`` on ``x``."""
    interp = _litert(path, threads)
    _litert_run(interp, x)
    (inp,) = interp.get_input_details()
    out = interp.get_output_details()[0]["index"]
    x = np.ascontiguousarray(x)

    def once() -> None:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        interp.get_tensor(out)

    return _timed(once, runs, warmup)


def thread_settings(threads: int) -> dict[str, Any]:
    """What the latency numbers ran under (recorded next to them)."""
    return {
        "onnxruntime": {
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "execution_mode": "ORT_SEQUENTIAL",
            "session.disable_quant_qdq": "1 (exact int8)",
        },
        "litert": {"num_threads": threads, "delegate": "default (XNNPACK)"},
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def keras_scores(model: Any, x: np.ndarray) -> np.ndarray:
    """Class scores of a Keras model in inference mode, in batches of 500."""
    import keras

    return _batched(lambda b: keras.ops.convert_to_numpy(model(b, training=False)), x)


# ----------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    """``ssm bench``: accuracy, sizes and latency of a run's exported artifacts."""
    from keras_ssm.export import load_compact

    if args.runs < 50:
        raise _usage_error(f"--runs must be at least 50; got {args.runs}")
    if args.limit is not None and args.limit < 1:
        raise _usage_error(f"--limit must be a positive integer; got {args.limit}")
    if args.threads < 1 or args.warmup < 0:
        raise _usage_error("--threads must be >= 1 and --warmup >= 0")
    run_dir, model, metrics = _resolve_run(args.run)
    src = Path(args.export_dir) if args.export_dir else run_dir / EXPORT_DIR
    artifacts = [
        n
        for n in ("model.onnx", "model_int8.onnx", "model.tflite", "model.ssm")
        if (src / n).is_file()
    ]
    if not artifacts:
        raise _usage_error(f"no exported model in {src}: run `ssm export {args.run}` first")
    out = src / BENCH
    if out.exists() and not args.force:
        raise _usage_error(f"{out} already exists; pass --force to replace it")
    dataset = args.dataset or metrics.get("dataset")
    if dataset is None:
        raise _usage_error("the run has no metrics.json naming its dataset; pass --dataset")
    quiet = args.quiet
    _say(
        f"ssm bench: {src} on the {dataset} test set"
        + (f" (first {args.limit})" if args.limit else ""),
        quiet,
    )
    x, y = load_test_set(dataset, args.data_dir, args.limit)
    keras_pred = np.argmax(keras_scores(model, x), axis=-1)
    keras_acc = float(np.mean(keras_pred == y))
    _say(f"  keras model.keras: accuracy {keras_acc:.4f} on {len(y)} images", quiet)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "export_dir": str(src),
        "dataset": dataset,
        "test_images": len(y),
        "keras_accuracy": keras_acc,
        "threads": thread_settings(args.threads),
        "runs": args.runs,
        "warmup": args.warmup,
        "artifacts": {},
        "versions": {},
    }
    batches = list(BATCHES)
    for name in artifacts:
        path = src / name
        entry: dict[str, Any] = {**file_sizes(path)}
        if name.endswith(".onnx"):
            entry["runtime"] = "onnxruntime"
            scores = onnx_predict(path, x, args.threads)
            lat = {
                b: ort_latency(path, _batch(x, b), args.runs, args.warmup, args.threads)
                for b in batches
            }
        elif name.endswith(".tflite"):
            entry["runtime"] = "litert"
            scores = litert_predict(path, x, args.threads)
            lat = {
                b: litert_latency(path, _batch(x, b), args.runs, args.warmup, args.threads)
                for b in batches
            }
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
        _say(line, quiet)
    result["versions"] = _versions()
    from keras_ssm.export import atomic_write_bytes

    atomic_write_bytes(out, _json_text(result).encode("utf-8"), overwrite=args.force)
    _say(f"ssm bench: wrote {out}", quiet)
    return result


def _batch(x: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` images (repeated if the test slice is smaller)."""
    reps = -(-size // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:size]) if reps > 1 else x[:size]


# ----------------------------------------------------------------------------- parser
def register(subparsers: Any) -> None:
    """Add the ``export`` and ``bench`` subcommands to the ``ssm`` parser's subparsers."""
    export = subparsers.add_parser(
        "export", help="fold a run's model and write ONNX / LiteRT / compact .ssm files"
    )
    export.add_argument("run", help="run folder from `ssm train` (or a .keras file)")
    export.add_argument(
        "--format",
        default="onnx,litert,compact",
        help="comma-separated: onnx, litert (tflite), compact (ssm); default: all three",
    )
    export.add_argument(
        "--shrink",
        action="store_true",
        help="remove units that can no longer matter before exporting",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="also write model_int8.onnx with exact int8 ternary weights",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--out-dir", help="destination folder (default: RUN/export)")
    export.add_argument("--force", action="store_true", help="replace existing files")
    export.add_argument("--quiet", action="store_true", help="no progress output")
    export.set_defaults(func=cmd_export)

    bench = subparsers.add_parser(
        "bench", help="accuracy, sizes and latency of a run's exported files"
    )
    bench.add_argument("run", help="run folder from `ssm train`, exported with `ssm export`")
    bench.add_argument(
        "--export-dir", help="folder holding the exported files (default: RUN/export)"
    )
    bench.add_argument("--dataset", help="default: the run's metrics.json")
    bench.add_argument("--data-dir", help="folder with the dataset files (or KERAS_SSM_DATA_DIR)")
    bench.add_argument("--limit", type=int, help="use only the first N test images")
    bench.add_argument(
        "--runs",
        type=int,
        default=100,
        help="timed runs per latency (median reported; at least 50)",
    )
    bench.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads and LiteRT threads (default 1)",
    )
    bench.add_argument("--force", action="store_true", help="replace an existing bench.json")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.set_defaults(func=cmd_bench)
