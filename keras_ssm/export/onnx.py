"""Export a (folded) Keras 3 model to ONNX through tf2onnx, verified before it is kept.

Example:
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> res = to_onnx(m, "/tmp/doc_example.onnx", overwrite=True)   # doctest: +SKIP
    >>> res.max_rel_error < 1e-5                                    # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import keras
import numpy as np

from keras_ssm.atomic import atomic_path
from keras_ssm.export._verify import (
    ExportResult,
    ExportVerificationError,
    check_inputs,
    keras_outputs,
    max_rel_error,
    random_inputs,
    single_input_spec,
)
from keras_ssm.export.runtime import ort_session

__all__ = ["to_onnx", "onnx_bytes", "ort_session"]


def _rename_outputs(proto, output_name: str) -> None:
    outs = list(proto.graph.output)
    names = [output_name] if len(outs) == 1 else [f"{output_name}_{i}" for i in range(len(outs))]
    mapping = {o.name: n for o, n in zip(outs, names, strict=True)}
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for o in proto.graph.output:
        o.name = mapping[o.name]


def onnx_bytes(
    model: keras.Model,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "output",
    int8: bool = False,
):
    """Convert ``model`` to an ``onnx.ModelProto`` (no file written, no verification).

    The input is named ``input_name`` with a dynamic batch dimension; outputs are named
    ``output_name`` (or ``output_name_i`` for several). With ``int8=True`` ternary kernels are
    stored as exact int8 (see :func:`keras_ssm.export.int8.quantize_onnx_ternary`).

    Returns:
        ``(model_proto, quantized)`` where ``quantized`` lists the int8 weights.

    Raises:
        RuntimeError: under a Keras backend other than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "ONNX export converts through tf2onnx and needs the TensorFlow backend "
            f"(the current Keras backend is {keras.backend.backend()!r}): save the model "
            "(.keras or .ssm) and export it from a process with KERAS_BACKEND=tensorflow"
        )
    import onnx
    import tensorflow as tf
    import tf2onnx

    shape, dtype = single_input_spec(model)
    spec = tf.TensorSpec((None,) + tuple(shape[1:]), tf.as_dtype(dtype), name=input_name)

    @tf.function(input_signature=[spec])
    def serve(x):
        return model(x, training=False)

    with _tensors_as_constants(model):
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    _rename_outputs(proto, output_name)
    quantized = []
    if int8:
        from keras_ssm.export.int8 import quantize_onnx_ternary

        proto, quantized = quantize_onnx_ternary(proto)
    onnx.checker.check_model(proto)
    return proto, quantized


@contextlib.contextmanager
def _tensors_as_constants(model: keras.Model) -> Iterator[None]:
    """Layers holding plain tensors (not variables) as attributes -- an adapted
    ``Normalization``'s ``mean`` and ``variance`` -- hold them as numpy arrays while the model is
    traced, so they become constants of the graph: a tensor captured from outside the function
    would become an ONNX graph input ("Required inputs ... are missing from input feed")."""
    import tensorflow as tf

    from keras_ssm.layer_tree import iter_layers

    saved = []
    for layer in iter_layers(model):
        for name, value in list(vars(layer).items()):
            if isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable):
                saved.append((layer, name, value))
                object.__setattr__(layer, name, value.numpy())
    try:
        yield
    finally:
        for layer, name, value in saved:
            object.__setattr__(layer, name, value)


def _run_onnx(path: str, input_name: str, x: np.ndarray) -> list[np.ndarray]:
    sess = ort_session(path)  # default options (DequantizeLinear files: exact)
    return [np.asarray(y) for y in sess.run(None, {input_name: x})]


def to_onnx(
    model: keras.Model,
    path: str | os.PathLike[str],
    opset: int = 17,
    input_name: str = "input",
    check: bool = True,
    int8: bool = False,
    output_name: str = "output",
    rtol: float = 1e-5,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``model`` to an ONNX file, verified against Keras before it is kept.

    The graph is converted with tf2onnx from a ``tf.function`` whose named ``tf.TensorSpec``
    has batch dimension ``None``; ``onnx.checker.check_model`` must pass. With ``check`` the
    file is written to a temporary name in the same directory, run with onnxruntime on random
    inputs (batch 3 and batch 1) and compared with the Keras model; only if the maximum
    relative error is at most ``rtol`` is it renamed to ``path``. On any failure nothing is
    left on disk.

    Args:
        model: a built Keras 3 model with a single input (e.g. ``keras_ssm.fold(m)``).
        path: destination ``.onnx`` file.
        opset: ONNX opset (13-18 are known to work).
        input_name: name of the graph input.
        check: verify with onnxruntime before keeping the file.
        int8: store ternary kernels as exact int8 codes and one float32 scale per tensor,
            rebuilt in the graph as ``Cast`` + ``Mul`` (see
            :func:`keras_ssm.export.int8.quantize_onnx_ternary`): about 4x smaller, and any
            onnxruntime session, default options included, folds them back into the exact
            float weights (same outputs and speed as the fp32 file).
        output_name: name of the graph output.
        rtol: tolerance for ``max|onnx - keras| / max|keras|``.
        overwrite: replace an existing file.

    Returns:
        An :class:`ExportResult`; ``details["quantized"]`` lists int8 weights.

    Raises:
        ExportVerificationError: the ONNX model's outputs differ from Keras.
        FileExistsError: ``path`` exists and ``overwrite`` is false.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> to_onnx(m, "/tmp/m.onnx", overwrite=True).max_rel_error < 1e-5  # doctest: +SKIP
        True
    """
    final = os.fspath(path)
    if not overwrite and os.path.lexists(final):
        raise FileExistsError(f"{final!r} already exists (pass overwrite=True to replace it)")
    proto, quantized = onnx_bytes(
        model, opset=opset, input_name=input_name, output_name=output_name, int8=int8
    )
    data = proto.SerializeToString()
    err = None
    checked: dict[str, float] = {}
    with atomic_path(final, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            scale, spread = check_inputs(model, "ONNX export")
            checked = {"check_input_scale": scale, "check_spread": spread}
            for batch, seed in ((3, 0), (1, 1)):
                x = random_inputs(model, batch=batch, seed=seed, scale=scale)
                got = _run_onnx(tmp, input_name, x)
                e = max_rel_error(got, keras_outputs(model, x))
                err = e if err is None else max(err, e)
                if not e <= rtol:
                    raise ExportVerificationError(
                        f"ONNX export of {model.name!r} differs from Keras: max relative error "
                        f"{e:.3g} > {rtol:g} (batch {batch}); nothing was written to {final!r}"
                    )
    details = {"quantized": quantized, "opset": opset, **checked}
    return ExportResult(final, len(data), err, details)
