"""The export pipeline: fold -> shrink -> formats -> verification -> manifest, all or nothing.

:func:`export_model` takes a trained model (masked layers, any training precision), folds it
(:func:`keras_ssm.fold`: always the first step, float32), optionally shrinks it
(:func:`keras_ssm.export.shrink`) and writes, into ``out_dir``:

* ``model.onnx`` (and ``model_int8.onnx`` with ``int8``: exact int8 ternary weights; with
  ``code_bits`` 4 or 2, ``model_int4.onnx`` / ``model_int2.onnx`` with 4- or 2-bit codes),
* ``model.tflite`` (LiteRT flatbuffer, sparse weight storage),
* ``model.ssm`` (the compact format),
* ``export.json``: what was written, sizes (raw and gzip), verification errors, shrink report.

Every file is verified against the float32 Keras model before it is kept.  Files are built in
a temporary folder beside the destination and moved in only when every format succeeded;
existing files are never replaced without ``overwrite``.  :func:`export_run` does the same for
a run folder (``RUN/model.keras`` -> ``RUN/export/``); ``ssm export`` calls it.

>>> parse_formats("tflite,onnx")
['onnx', 'litert']
>>> file_names(["onnx", "compact"], int8=True)
['model.onnx', 'model_int8.onnx', 'model.ssm']
>>> file_names(["onnx"], int8=True, code_bits=2)
['model.onnx', 'model_int2.onnx']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_ssm.atomic import file_mode, place, write_json
from keras_ssm.export._verify import (
    ExportVerificationError,
    keras_outputs,
    max_rel_error,
    probe_inputs,
)
from keras_ssm.export.runtime import file_sizes, library_versions
from keras_ssm.export.shrink import NCHWC_BLOCK

__all__ = [
    "FORMATS",
    "REPORT",
    "export_model",
    "export_run",
    "file_names",
    "open_source",
    "parse_formats",
]

FORMATS = ("onnx", "litert", "compact")
_ALIASES = {"tflite": "litert", "ssm": "compact"}
REPORT = "export.json"
Progress = Callable[[str], Any] | None


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """``"onnx,litert"`` (or a list) -> ``["onnx", "litert"]`` in :data:`FORMATS` order."""
    parts = formats.split(",") if isinstance(formats, str) else list(formats)
    asked = [_ALIASES.get(str(p).strip().lower(), str(p).strip().lower()) for p in parts]
    asked = [p for p in asked if p]
    bad = [p for p in asked if p not in FORMATS]
    if bad or not asked:
        raise ValueError(
            f"formats must be a comma-separated list of {', '.join(FORMATS)} (--format); "
            f"got {formats!r}"
        )
    return [f for f in FORMATS if f in asked]


def _check_int8(formats: Sequence[str], int8: bool, code_bits: int) -> None:
    """Argument errors of ``int8`` / ``code_bits``, before any work is done."""
    from keras_ssm.export.int8 import check_code_bits

    check_code_bits(code_bits, "code_bits (--code-bits)")
    if int8 and "onnx" not in formats:
        raise ValueError("int8=True (--int8) applies to the ONNX export: add onnx to the formats")
    if code_bits != 8 and not int8:
        raise ValueError(
            f"code_bits={code_bits} (--code-bits) sets the width of the --int8 file's weight "
            "codes: add int8=True (--int8)"
        )


def _check_channel_multiple(channel_multiple: Any) -> int:
    """``channel_multiple`` as an int: 0 (off) or at least 2."""
    ok = isinstance(channel_multiple, int) and not isinstance(channel_multiple, bool)
    if not ok or channel_multiple < 0 or channel_multiple == 1:
        raise ValueError(
            "channel_multiple (--channel-multiple) must be 0 (no padding) or an integer >= 2; "
            f"received {channel_multiple!r}"
        )
    return channel_multiple


def file_names(formats: Sequence[str], int8: bool, code_bits: int = 8) -> list[str]:
    """The files :func:`export_model` writes for ``formats`` (``export.json`` aside)."""
    names = []
    if "onnx" in formats:
        names.append("model.onnx")
        if int8:
            names.append(f"model_int{code_bits}.onnx")
    if "litert" in formats:
        names.append("model.tflite")
    if "compact" in formats:
        names.append("model.ssm")
    return names


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary folder beside ``dest``, removed whatever happens."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clashes(dest: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if (dest / n).exists()]


def _publish(staged: Path, dest: Path, names: Sequence[str], overwrite: bool) -> None:
    """Move every staged file into ``dest``; without ``overwrite`` never replace a file."""
    dest.mkdir(parents=True, exist_ok=True)
    clash = [] if overwrite else _clashes(dest, names)
    if clash:
        raise FileExistsError(
            f"{dest} already holds {', '.join(clash)}; pass overwrite=True (ssm export --force)"
        )
    for name in names:
        os.chmod(staged / name, file_mode())
        try:
            place(staged / name, dest / name, overwrite=overwrite)
        except FileExistsError:
            raise FileExistsError(
                f"{dest / name} appeared meanwhile; pass overwrite=True (ssm export --force)"
            ) from None


class _Checked:
    """A minimal ``ExportResult``-like record for the compact format."""

    def __init__(self, err: float) -> None:
        self.max_rel_error = err
        self.details: dict[str, Any] = {}


def _save_compact_checked(model: Any, path: Path, x: np.ndarray) -> _Checked:
    """Write ``model`` as ``.ssm`` and check that the reloaded model gives the same outputs."""
    from keras_ssm.export.compact import load_compact, save_compact

    save_compact(model, path)
    err = max_rel_error(keras_outputs(load_compact(path), x), keras_outputs(model, x))
    if not err <= 1e-6:
        path.unlink(missing_ok=True)
        raise ExportVerificationError(f"the .ssm file does not reproduce the model ({err:.3g})")
    return _Checked(err)


def export_model(
    model: Any,
    out_dir: str | os.PathLike[str],
    formats: str | Sequence[str] = FORMATS,
    *,
    shrink: bool = False,
    int8: bool = False,
    code_bits: int = 8,
    opset: int = 17,
    channel_multiple: int = NCHWC_BLOCK,
    overwrite: bool = False,
    manifest: dict[str, Any] | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Fold (and shrink) ``model`` and write ``formats`` into ``out_dir``; return the manifest
    that ``export.json`` holds.  ``manifest`` entries (e.g. the run's accuracy) are included.
    ``int8`` adds the ONNX file with exact integer weight codes of ``code_bits`` bits (8, 4
    or 2: :func:`keras_ssm.export.to_onnx`).

    With ``shrink``, the ONNX files pad each 2D convolution that feeds another one with zero
    filters up to a multiple of ``channel_multiple`` (default 16; 0: off;
    :func:`keras_ssm.export.align_channels`): the same outputs, and onnxruntime runs the
    convolution after it in its fast blocked layout, which needs that multiple (the shrunk
    Conv4's 57 -> 27 convolution took as long as the dense file's 64 -> 64 one without it).
    The other formats keep the shrunk widths."""
    import keras

    from keras_ssm import wrap
    from keras_ssm.export.crop import crop_inputs
    from keras_ssm.export.onnx import to_onnx
    from keras_ssm.export.shrink import align_channels
    from keras_ssm.export.shrink import shrink as shrink_model
    from keras_ssm.export.tflite import to_tflite

    formats = parse_formats(formats)
    _check_int8(formats, int8, code_bits)
    _check_channel_multiple(channel_multiple)
    needs_tf = [f for f in formats if f in ("onnx", "litert")]
    if needs_tf and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"exporting to {' and '.join(needs_tf)} needs the TensorFlow backend (set "
            f"KERAS_BACKEND=tensorflow; the current backend is {keras.backend.backend()!r}); "
            "the compact format exports on any backend"
        )
    dest = Path(out_dir)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} exists and is not a directory")
    names = [*file_names(formats, int8, code_bits), REPORT]
    clash = _clashes(dest, names)
    if clash and not overwrite:
        raise FileExistsError(
            f"{dest} already holds {', '.join(clash)}; pass overwrite=True (ssm export --force) "
            "to replace them"
        )
    say = progress or (lambda message: None)
    start = time.perf_counter()
    report: dict[str, Any] = {
        **(manifest or {}),
        "formats": formats,
        "shrink": shrink,
        "int8": int8,
        "code_bits": code_bits if int8 else None,
        "files": {},
        "versions": {},
    }
    with _staging(dest) as tmp:
        say("  fold: masked layers -> stock layers with kernels w0 * M (float32)")
        deployed = wrap.fold(model)
        reference = wrap.to_float32(model)  # the model as trained, computing in float32
        x, scale, spread = probe_inputs(reference)  # inputs whose outputs differ
        want = keras_outputs(reference, x)
        report["check_input_scale"], report["check_spread"] = scale, spread
        if spread < 1e-4:
            say(
                f"  warning: the model's outputs hardly depend on its inputs (spread {spread:.2g}"
                "): the export checks compare near-constant outputs"
            )
        report["fold_max_rel_error"] = max_rel_error(keras_outputs(deployed, x), want)
        report["params_folded"] = int(deployed.count_params())
        if shrink:
            deployed, shrink_report = shrink_model(deployed)
            deployed, crop_report = crop_inputs(deployed)
            report["crop"] = {
                "box": crop_report.box,
                "features_before": crop_report.features_before,
                "features_after": crop_report.features_after,
                "features_read": crop_report.features_read,
                "box_features": crop_report.box_features,
            }
            err = max_rel_error(keras_outputs(deployed, x), want)
            report["shrink_max_rel_error"] = err  # shrink and crop together
            report["shrink_report"] = {
                "params_before": shrink_report.params_before,
                "params_after": shrink_report.params_after,
                "layers": [vars(e) for e in shrink_report.layers],
            }
            say(
                f"  shrink: params {shrink_report.params_before} -> "
                f"{shrink_report.params_after} (max rel error {err:.2g}); {crop_report}"
            )
        for_onnx = deployed
        if shrink and channel_multiple and "onnx" in formats:
            # no width limit: a model re-exported from its compact file is shrunk already
            for_onnx, padded = align_channels(deployed, channel_multiple)
            report["onnx_channel_alignment"] = {
                "multiple": channel_multiple,
                "filters": {name: list(pair) for name, pair in padded.items()},
                "max_rel_error": (  # the padded model against the trained one
                    max_rel_error(keras_outputs(for_onnx, x), want)
                    if padded
                    else report["shrink_max_rel_error"]
                ),
            }
            if padded:
                say(
                    "  ONNX: zero filters pad "
                    + ", ".join(f"{name} {a} -> {b}" for name, (a, b) in padded.items())
                    + f" (multiples of {channel_multiple}: onnxruntime's blocked convolutions)"
                )
        steps: list[tuple[str, Callable[[Path], Any]]] = []
        if "onnx" in formats:
            steps.append(("model.onnx", lambda p: to_onnx(for_onnx, p, opset=opset)))
            if int8:
                steps.append(
                    (
                        f"model_int{code_bits}.onnx",
                        lambda p: to_onnx(for_onnx, p, opset=opset, int8=True, code_bits=code_bits),
                    )
                )
        if "litert" in formats:
            steps.append(("model.tflite", lambda p: to_tflite(deployed, p, sparse=True)))
        if "compact" in formats:
            steps.append(("model.ssm", lambda p: _save_compact_checked(deployed, p, x)))
        for i, (name, write) in enumerate(steps, start=1):
            t0 = time.perf_counter()
            say(f"  [{i}/{len(steps)}] {name} ...")
            result = write(tmp / name)
            entry: dict[str, Any] = {
                **file_sizes(tmp / name),
                "sha256": hashlib.sha256((tmp / name).read_bytes()).hexdigest(),
                "max_rel_error": result.max_rel_error,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            quantized = result.details.get("quantized") if result.details else None
            if quantized:
                entry["int8_weights"] = [
                    {
                        "name": q.name,
                        "shape": list(q.shape),
                        "scale": q.scale,
                        "nonzero": q.nonzero,
                        "bits": q.bits,
                    }
                    for q in quantized
                ]
                entry["opset"] = result.details.get("opset")
            report["files"][name] = entry
            say(
                f"      {entry['bytes']:,} bytes ({entry['gzip_bytes']:,} gzip), "
                f"max rel error vs Keras {result.max_rel_error:.2g}"
            )
        report["versions"] = library_versions()
        report["seconds"] = round(time.perf_counter() - start, 2)
        write_json(tmp / REPORT, report)
        _publish(tmp, dest, names, overwrite=overwrite)
    return report


def open_source(run: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any], Path]:
    """``(run_dir, model, metrics, source)`` of what can be exported: a run folder from
    ``ssm train`` (``model.keras``), a ``.keras`` or ``.ssm`` file, or a folder of committed
    results that keeps only the compact ``model.ssm`` (the folded, shrunk model) beside
    ``metrics.json`` (``examples/paper/results/<run>``), so that a committed run can be
    re-exported and re-timed.

    ``source`` is the file the model came from.
    """
    from keras_ssm.export.compact import load_compact
    from keras_ssm.run_dir import RunDir, open_run

    path = Path(run)
    compact = path / "model.ssm" if path.is_dir() else path
    if compact.suffix == ".ssm" and compact.is_file() and not (path / RunDir.MODEL).exists():
        run_dir = RunDir(compact.parent)
        return run_dir, load_compact(compact), run_dir.read_metrics(), compact
    run_dir, model, metrics = open_run(run)
    return run_dir, model, metrics, run_dir.model_path


def export_run(
    run: str | os.PathLike[str],
    formats: str | Sequence[str] = FORMATS,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    shrink: bool = False,
    int8: bool = False,
    code_bits: int = 8,
    opset: int = 17,
    channel_multiple: int = NCHWC_BLOCK,
    overwrite: bool = False,
    progress: Progress = None,
) -> dict[str, Any]:
    """:func:`export_model` for a run folder (or a ``.keras`` file, or a results folder that
    keeps the compact ``model.ssm``: :func:`open_source`): writes ``RUN/export/`` (or
    ``out_dir``) and returns the manifest."""
    formats = parse_formats(formats)  # argument errors before the model is loaded
    _check_int8(formats, int8, code_bits)
    _check_channel_multiple(channel_multiple)
    run_dir, model, metrics, source = open_source(run)
    dest = Path(out_dir) if out_dir is not None else run_dir.export_path
    manifest = {
        "run": str(run_dir.path),
        "source": str(source),
        "dataset": metrics.get("dataset"),
        "keras_test_accuracy": metrics.get("test_accuracy"),
        "remaining": metrics.get("remaining"),
    }
    if progress is not None:
        files = ", ".join(file_names(formats, int8, code_bits))
        progress(f"ssm export: {run_dir.path} -> {dest} ({files})")
    return export_model(
        model,
        dest,
        formats,
        shrink=shrink,
        int8=int8,
        code_bits=code_bits,
        opset=opset,
        channel_multiple=channel_multiple,
        overwrite=overwrite,
        manifest=manifest,
        progress=progress,
    )
