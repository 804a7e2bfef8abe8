"""Export a (folded) Keras 3 model to TFLite / LiteRT, verified before it is kept.

Uses ``tf.lite.TFLiteConverter.from_keras_model`` (never ``from_concrete_functions``,
which silently produces NaN outputs for Keras 3 models) and checks the result with the
``ai_edge_litert`` interpreter.

Sparse storage (``sparse=True``) goes through :mod:`keras_ssm.export.tflite_sparse`, which
checks every sparse tensor the converter wrote and re-encodes those its block encoder
truncates.

Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> to_tflite(m, "/tmp/m.tflite", overwrite=True).max_rel_error < 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from typing import Any

import keras
import numpy as np

from keras_ssm.atomic import atomic_path
from keras_ssm.export import tflite_sparse
from keras_ssm.export._verify import (
    ExportResult,
    Inputs,
    InputSpec,
    input_specs,
    verify_file,
)

__all__ = ["to_tflite", "tflite_bytes", "run_tflite"]


def _convert(model: keras.Model, sparse: bool, int8: bool) -> bytes:
    """The converter's flatbuffer for ``model`` (no repair, no verification)."""
    import tensorflow as tf

    specs = input_specs(model)  # validates: built, known inputs
    with contextlib.ExitStack() as stack:
        if len(specs) == 1:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        else:
            converter = _saved_model_converter(model, specs, stack)
        return _run_converter(converter, sparse, int8)


def _saved_model_converter(
    model: keras.Model, specs: list[InputSpec], stack: contextlib.ExitStack
) -> Any:
    """A converter for a multi-input model, from a SavedModel whose ``serve`` signature takes
    the inputs by name (what ``from_keras_model`` does for one input; for several it passes a
    list, which a model taking a dict of inputs refuses)."""
    import tempfile

    import tensorflow as tf

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="keras_ssm_tflite_"))
    signature = {
        spec.name: tf.TensorSpec((None,) + tuple(spec.shape[1:]), spec.dtype, name=spec.name)
        for spec in specs
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), [signature])
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(folder, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(folder)


def _run_converter(converter, sparse: bool, int8: bool) -> bytes:
    import tensorflow as tf

    opts = []
    if int8:
        opts.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = opts
    # The converter saves the model first and prints one line per captured variable
    # ("Saved artifact at ...", hundreds for a convnet): keep the user's output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def tflite_bytes(model: keras.Model, sparse: bool = True, int8: bool = False) -> bytes:
    """Convert ``model`` to a TFLite flatbuffer (no file written, no verification).

    ``sparse`` adds ``Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight storage); tensors the
    converter would store wrongly (block-sparse along an axis that is not a multiple of the
    block size, see the module docstring) are re-encoded. ``int8`` adds ``Optimize.DEFAULT``
    (dynamic-range quantization: int8 weights, float activations).
    """
    return _tflite_bytes(model, sparse, int8)[0]


def _tflite_bytes(model: keras.Model, sparse: bool, int8: bool) -> tuple[bytes, dict]:
    """``tflite_bytes`` and what was done to the converter's sparse tensors."""
    data = _convert(model, sparse, int8)
    if not sparse:
        return data, {}
    try:
        fb = tflite_sparse.read(data)
        if not tflite_sparse.truncated_sparse_tensors(fb):
            return data, {}
        dense_data = _convert(model, False, int8)
        fixed = tflite_sparse.reencode(fb, tflite_sparse.read(dense_data))
        return tflite_sparse.write(fb), {"sparse_reencoded": fixed}
    except Exception as e:  # noqa: BLE001 - a correct dense file beats no file
        warnings.warn(
            f"TFLite export of {model.name!r}: the converter's sparse weights could not be "
            f"checked or repaired ({type(e).__name__}: {e}); the model is stored dense",
            UserWarning,
            stacklevel=3,
        )
        return _convert(model, False, int8), {"sparse_fallback": "dense model"}


def run_tflite(
    model_path_or_bytes: str | bytes, x: Inputs, default_delegates: bool = True
) -> list[np.ndarray]:
    """Run a TFLite model on ``x`` (any batch size) with the LiteRT interpreter: an array for a
    single-input model, a dict of named arrays (its signature's inputs) for several inputs,
    whose outputs come back in the order of their names (a dict of outputs: sorted keys).

    ``default_delegates=False`` runs LiteRT's builtin kernels without the XNNPACK delegate
    (needed for sparse int8 models, whose sparse hybrid FULLY_CONNECTED XNNPACK rejects).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = (
        {}
        if default_delegates
        else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    )
    if isinstance(model_path_or_bytes, bytes):
        interp = Interpreter(model_content=model_path_or_bytes, **kw)
    else:
        interp = Interpreter(model_path=os.fspath(model_path_or_bytes), **kw)
    if isinstance(x, dict):
        outputs = interp.get_signature_runner()(**x)
        return [np.array(outputs[name]) for name in sorted(outputs, key=_natural)]
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return [np.array(interp.get_tensor(o["index"])) for o in interp.get_output_details()]


def _natural(name: str) -> tuple:
    """Sort key that puts ``output_10`` after ``output_9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike[str],
    sparse: bool = True,
    int8: bool = False,
    check: bool = True,
    rtol: float | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``model`` to a ``.tflite`` file, verified with LiteRT before it is kept.

    The flatbuffer is written to a temporary file in the destination directory, run with
    ``ai_edge_litert.interpreter.Interpreter`` on random inputs (batch 3 and 1) and compared
    with Keras; only then is it renamed to ``path``. On failure nothing is left on disk.

    Args:
        model: a built Keras 3 model (e.g. ``keras_ssm.fold(m)``); a multi-input model is
            converted through a SavedModel whose signature takes its inputs by name.
        path: destination file.
        sparse: store weights sparse (``Optimize.EXPERIMENTAL_SPARSITY``); weights the
            converter would store block-sparse with entries lost are re-encoded (see the
            module docstring) and listed in ``details["sparse_reencoded"]``.
        int8: dynamic-range quantization (``Optimize.DEFAULT``). For ternary kernels the
            stored int8 codes are ``{-127, 0, 127}`` with scale ``c/127`` (see
            :func:`keras_ssm.export.int8.tflite_int8_weights`); LiteRT's hybrid kernels also
            quantize activations on the fly, so outputs are close but not exact.
        check: verify before keeping the file.
        rtol: tolerance on ``max|tflite - keras| / max|keras|`` for a model whose outputs
            move no more than its inputs; default ``1e-4`` for float and ``5e-2`` for
            ``int8``, scaled up by the model's sensitivity (see
            :func:`keras_ssm.export._verify.check_tolerance`); ``details["check_tolerance"]``
            records the one applied.
        overwrite: replace an existing file.

    Raises:
        ExportVerificationError: outputs differ from Keras beyond ``rtol``.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    final = os.fspath(path)
    if not overwrite and os.path.lexists(final):
        raise FileExistsError(f"{final!r} already exists (pass overwrite=True to replace it)")
    base = rtol if rtol is not None else (5e-2 if int8 else 1e-4)
    data, repair = _tflite_bytes(model, sparse, int8)
    delegates = not (int8 and sparse)
    if not delegates:
        warnings.warn(
            "a sparse int8 TFLite model does not run with LiteRT's default XNNPACK "
            "delegate; run it without default delegates or export with sparse=False",
            UserWarning,
            stacklevel=2,
        )
    err = None
    checked: dict[str, float] = {}
    with atomic_path(final, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            err, checked = verify_file(
                model,
                lambda x: run_tflite(tmp, x, default_delegates=delegates),
                "TFLite export",
                base,
                final,
            )
    details = {
        "sparse": sparse,
        "int8": int8,
        "default_delegates_ok": delegates,
        **repair,
        **checked,
    }
    return ExportResult(final, len(data), err, details)
