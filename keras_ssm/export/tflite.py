"""Export a (folded) Keras 3 model to TFLite / LiteRT, verified before it is kept.

Uses ``tf.lite.TFLiteConverter.from_keras_model`` (never ``from_concrete_functions``,
which silently produces NaN outputs for Keras 3 models) and checks the result with the
``ai_edge_litert`` interpreter.

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
import warnings

import keras
import numpy as np

from keras_ssm.atomic import atomic_path
from keras_ssm.export._verify import (
    ExportResult,
    ExportVerificationError,
    keras_outputs,
    max_rel_error,
    random_inputs,
    single_input_spec,
)

__all__ = ["to_tflite", "tflite_bytes", "run_tflite"]


def tflite_bytes(model: keras.Model, sparse: bool = True, int8: bool = False) -> bytes:
    """Convert ``model`` to a TFLite flatbuffer (no file written, no verification).

    ``sparse`` adds ``Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight storage); ``int8`` adds
    ``Optimize.DEFAULT`` (dynamic-range quantization: int8 weights, float activations).
    """
    import tensorflow as tf

    single_input_spec(model)  # validates: built, one input
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
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


def run_tflite(
    model_path_or_bytes: str | bytes, x: np.ndarray, default_delegates: bool = True
) -> list[np.ndarray]:
    """Run a single-input TFLite model on ``x`` (any batch size) with the LiteRT interpreter.

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
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return [np.array(interp.get_tensor(o["index"])) for o in interp.get_output_details()]


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
        model: a built single-input Keras 3 model (e.g. ``keras_ssm.fold(m)``).
        path: destination file.
        sparse: store weights sparse (``Optimize.EXPERIMENTAL_SPARSITY``).
        int8: dynamic-range quantization (``Optimize.DEFAULT``). For ternary kernels the
            stored int8 codes are ``{-127, 0, 127}`` with scale ``c/127`` (see
            :func:`keras_ssm.export.int8.tflite_int8_weights`); LiteRT's hybrid kernels also
            quantize activations on the fly, so outputs are close but not exact.
        check: verify before keeping the file.
        rtol: tolerance on ``max|tflite - keras| / max|keras|``; default ``1e-5`` for float
            and ``5e-2`` for ``int8``.
        overwrite: replace an existing file.

    Raises:
        ExportVerificationError: outputs differ from Keras beyond ``rtol``.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    final = os.fspath(path)
    if not overwrite and os.path.lexists(final):
        raise FileExistsError(f"{final!r} already exists (pass overwrite=True to replace it)")
    tol = rtol if rtol is not None else (5e-2 if int8 else 1e-5)
    data = tflite_bytes(model, sparse=sparse, int8=int8)
    delegates = not (int8 and sparse)
    if not delegates:
        warnings.warn(
            "a sparse int8 TFLite model does not run with LiteRT's default XNNPACK "
            "delegate; run it without default delegates or export with sparse=False",
            UserWarning,
            stacklevel=2,
        )
    err = None
    with atomic_path(final, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            for batch, seed in ((3, 0), (1, 1)):
                x = random_inputs(model, batch=batch, seed=seed)
                got = run_tflite(tmp, x, default_delegates=delegates)
                e = max_rel_error(got, keras_outputs(model, x))
                err = e if err is None else max(err, e)
                if not e <= tol:
                    raise ExportVerificationError(
                        f"TFLite export of {model.name!r} differs from Keras: max relative "
                        f"error {e:.3g} > {tol:g} (batch {batch}); nothing was written to "
                        f"{final!r}"
                    )
    return ExportResult(
        final, len(data), err, {"sparse": sparse, "int8": int8, "default_delegates_ok": delegates}
    )
