"""Deploying folded signed-supermask models.

* :func:`shrink` removes units/filters that can no longer matter (same outputs, smaller model);
  :func:`align_channels` pads a shrunk convolution's odd filter count with zero filters so that
  onnxruntime keeps its fast blocked convolutions;
  :func:`crop_inputs` cuts the image border an FCN never reads (one Slice, not a Gather).
* :func:`to_onnx` / :func:`to_tflite` export through tf2onnx / the TFLite converter and verify
  the result against Keras before the file is kept.
* :func:`is_ternary` finds the per-layer scale ``c`` of ``{-c, 0, +c}`` kernels; ``int8=True``
  on the exporters stores such kernels as int8 with scale ``c`` (exact in ONNX).
* :func:`save_compact` / :func:`load_compact` read and write the ``.ssm`` format: architecture
  JSON + entropy-coded ternary masks (an MNIST FCN at 3.8% remaining is under 10 KB).
* :func:`export_model` / :func:`export_run`: the whole pipeline (fold -> shrink -> formats ->
  verification -> ``export.json``), all or nothing; :func:`bench_run` measures the result.
* :mod:`keras_ssm.export.runtime`: onnxruntime / LiteRT sessions, predictions and timing.

Example:
    >>> from keras_ssm.export import shrink, to_onnx, save_compact     # doctest: +SKIP
    >>> small, report = shrink(folded)                                 # doctest: +SKIP
    >>> to_onnx(small, "fcn.onnx", int8=True)                          # doctest: +SKIP
    >>> save_compact(small, "fcn.ssm")                                 # doctest: +SKIP
"""

from keras_ssm.atomic import atomic_path, atomic_write_bytes
from keras_ssm.export import runtime
from keras_ssm.export._verify import ExportResult, ExportVerificationError, max_rel_error
from keras_ssm.export.bench import bench_run, load_test_set
from keras_ssm.export.compact import (
    CompactFormatError,
    compact_bytes,
    load_compact,
    model_from_compact_bytes,
    save_compact,
)
from keras_ssm.export.crop import CropReport, crop_inputs
from keras_ssm.export.int8 import is_ternary, quantize_onnx_ternary, ternary_codes
from keras_ssm.export.onnx import onnx_bytes, to_onnx
from keras_ssm.export.pipeline import FORMATS, export_model, export_run, parse_formats
from keras_ssm.export.runtime import ort_session
from keras_ssm.export.shrink import LayerShrink, ShrinkReport, align_channels, shrink
from keras_ssm.export.tflite import run_tflite, tflite_bytes, to_tflite

__all__ = [
    "FORMATS",
    "CompactFormatError",
    "CropReport",
    "ExportResult",
    "ExportVerificationError",
    "LayerShrink",
    "ShrinkReport",
    "align_channels",
    "atomic_path",
    "atomic_write_bytes",
    "bench_run",
    "compact_bytes",
    "crop_inputs",
    "export_model",
    "export_run",
    "is_ternary",
    "load_compact",
    "load_test_set",
    "max_rel_error",
    "model_from_compact_bytes",
    "onnx_bytes",
    "ort_session",
    "parse_formats",
    "quantize_onnx_ternary",
    "run_tflite",
    "runtime",
    "save_compact",
    "shrink",
    "ternary_codes",
    "tflite_bytes",
    "to_onnx",
    "to_tflite",
]
