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
from typing import Any

import keras
import numpy as np

from keras_ssm.atomic import atomic_path
from keras_ssm.export._verify import (
    ExportResult,
    Inputs,
    as_feed,
    input_specs,
    verify_file,
)
from keras_ssm.export.runtime import ort_session

__all__ = [
    "input_names",
    "matmuls_as_gemm",
    "pools_before_activations",
    "rewrite_for_onnxruntime",
    "to_onnx",
    "onnx_bytes",
    "ort_session",
]


def input_names(model: keras.Model, input_name: str = "input") -> list[str]:
    """The ONNX graph's input names: ``input_name`` for a single-input model, else each input's
    own name (its key in the model's input dict, or its ``keras.Input`` name), in the order
    ``model.inputs`` lists them."""
    specs = input_specs(model)
    return [input_name] if len(specs) == 1 else [spec.name for spec in specs]


def _output_names(model: keras.Model, output_name: str, count: int) -> list[str]:
    struct = getattr(model, "output", None)
    if count > 1 and isinstance(struct, dict) and len(struct) == count:
        return sorted(struct)  # a dict of outputs keeps its keys (flattened in sorted order)
    return [output_name] if count == 1 else [f"{output_name}_{i}" for i in range(count)]


def _rename_outputs(proto, names: list[str]) -> None:
    outs = list(proto.graph.output)
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
    code_bits: int = 8,
    rewrite: bool = True,
):
    """Convert ``model`` to an ``onnx.ModelProto`` (no file written, no verification).

    The input is named ``input_name`` with a dynamic batch dimension (a multi-input model's
    inputs keep their own names, see :func:`input_names`); outputs are named ``output_name``
    (several: ``output_name_i``, or their keys for a dict of outputs). With ``int8=True``
    ternary kernels are stored as exact integer codes of ``code_bits`` bits (8, 4 or 2; see
    :func:`keras_ssm.export.int8.quantize_onnx_ternary`).  ``rewrite=False`` keeps the graph
    as tf2onnx wrote it, without :func:`rewrite_for_onnxruntime` (exact rewrites for speed).

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

    names = input_names(model, input_name)
    signature = [
        tf.TensorSpec((None,) + tuple(spec.shape[1:]), tf.as_dtype(spec.dtype), name=name)
        for spec, name in zip(input_specs(model), names, strict=True)
    ]

    @tf.function(input_signature=signature)
    def serve(*xs):
        x = xs[0] if len(xs) == 1 else dict(zip(names, xs, strict=True))
        return model(x, training=False)

    with _tensors_as_constants(model), _convolutions_as_graph_ops():
        proto, _ = tf2onnx.convert.from_function(
            serve,
            input_signature=signature,
            opset=opset,
            custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        )
    _rename_outputs(proto, _output_names(model, output_name, len(proto.graph.output)))
    if rewrite:
        proto = rewrite_for_onnxruntime(proto)
    quantized = []
    if int8:
        from keras_ssm.export.int8 import quantize_onnx_ternary

        proto, quantized = quantize_onnx_ternary(proto, bits=code_bits)
    onnx.checker.check_model(proto)
    return proto, quantized


def matmuls_as_gemm(model_proto):
    """Write each ``MatMul`` of a 2-D input by a 2-D float weight as a ``Gemm`` (with the
    following bias ``Add`` as its ``C``), so that onnxruntime fuses the activation after it.

    tf2onnx writes a Dense layer as ``MatMul`` (+ ``Add`` for a bias).  onnxruntime fuses an
    activation (Relu, Elu, Sigmoid, ...) into a ``Gemm`` (``FusedGemm``) but never into a
    ``MatMul`` without a bias, and a signed supermask FCN has no biases: at batch 1 each of its
    nodes costs about as much as its arithmetic.  Measured with ``python
    export/graph_timing.py`` (a 784-63-10 ELU net, default session options, 2 cores): ``Gemm``
    8.5 / 46.0 / 144.1 us vs ``MatMul`` 8.9 / 46.7 / 144.3 us at batch 1 / 64 / 256; a folded,
    shrunk FCN runs 6 nodes instead of 8.  ``Gemm`` runs the same MLAS kernel as ``MatMul``;
    the outputs are equal.

    Returns a modified copy; the input proto is untouched.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - no shapes, no rewrite: the MatMuls stay as they are
        return model
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*inferred.input, *inferred.value_info, *inferred.output]
        if v.type.tensor_type.HasField("shape")
    }
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def weight_2d(name: str) -> bool:
        t = inits.get(name)
        return t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2

    dropped = []
    for node in graph.node:
        if node.op_type != "MatMul" or ranks.get(node.input[0]) != 2:
            continue
        if not weight_2d(node.input[1]):
            continue
        node.op_type = "Gemm"
        units = inits[node.input[1]].dims[1]
        after = readers.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type != "Add" or node.output[0] in outputs:
            continue
        add = after[0]
        bias = [b for b in add.input if b != node.output[0]]
        t = inits.get(bias[0]) if len(bias) == 1 else None
        if t is None or t.data_type != TensorProto.FLOAT:
            continue
        if numpy_helper.to_array(t).shape not in ((units,), (1, units)):
            continue
        node.input.append(bias[0])
        node.output[0] = add.output[0]
        dropped.append(add)
    for add in dropped:
        graph.node.remove(add)
    return model


# Elementwise activations that are monotone non-decreasing for the attribute values checked
# here, so that max-pooling their output equals activating the max-pooled input, and that
# onnxruntime's CPU provider never fuses into the Conv before them (it fuses Relu, LeakyRelu,
# Sigmoid, Tanh, Clip and HardSigmoid, which are better left where they are).
_MONOTONE: dict[str, Any] = {
    "Elu": lambda a: a.get("alpha", 1.0) >= 0,
    "Selu": lambda a: a.get("alpha", 1.67326) >= 0 and a.get("gamma", 1.0507) >= 0,
    "Celu": lambda a: a.get("alpha", 1.0) > 0,
    "Softplus": lambda a: True,
    "Softsign": lambda a: True,
}


# Nodes that take maxima over sets of elements (windows, all positions, given axes): each
# commutes with a non-decreasing elementwise function.
_MAX_POOLS = ("MaxPool", "GlobalMaxPool", "ReduceMax")
# Nodes that only move elements, which an elementwise function commutes with.
_LAYOUT = ("Transpose", "Identity")


def pools_before_activations(model_proto):
    """Max-pool before a monotone activation instead of after it: ``Elu -> MaxPool`` becomes
    ``MaxPool -> Elu``, so the activation runs on the pooled tensor (a quarter of the elements
    after a 2x2 pool) and, in onnxruntime's blocked (NCHWc) layout, so do the reorders around it.

    Exact: for an activation ``f`` that never decreases, ``max(f(a), f(b)) = f(max(a, b))``.
    Measured with ``python export/pool_timing.py`` (default session options, 2 cores, AMD EPYC;
    two runs of 5-7 interleaved rounds): the signed Conv6 of the paper reproduction 1.08x
    faster at batch 64 (27.6 vs 29.8 ms) and 0.96-1.08x at batch 1, the signed Conv4 1.12x and
    1.04x, a dense Conv6 1.09x and 1.01x (export/RESULTS_pool_timing.md); the outputs are
    bit-identical.

    Applies to ``MaxPool`` (one output), ``GlobalMaxPool`` and ``ReduceMax`` (what tf2onnx
    writes for a global max-pool over NHWC) after ``Elu``/``Selu``/``Celu`` (non-negative
    ``alpha``), ``Softplus`` or ``Softsign`` whose output only that pool reads, directly or
    through ``Transpose`` / ``Identity`` nodes that nothing else reads.  Returns a modified
    copy; the input proto is untouched.
    """
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    nodes = list(graph.node)
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}

    def only_read_once(node: Any) -> bool:
        out = node.output[0]
        return len(node.output) == 1 and readers.get(out) == 1 and out not in outputs

    moved = set()
    for pool in [n for n in nodes if n.op_type in _MAX_POOLS and len(n.output) == 1]:
        reader, act = pool, producer.get(pool.input[0])  # reader: the node that reads `act`
        while act is not None and act.op_type in _LAYOUT and only_read_once(act):
            reader, act = act, producer.get(act.input[0])  # tf2onnx may leave a Transpose
        if act is None or act.op_type not in _MONOTONE or not only_read_once(act):
            continue
        if not _MONOTONE[act.op_type](
            {a.name: helper.get_attribute_value(a) for a in act.attribute}
        ):
            continue
        x, between, y = act.input[0], act.output[0], pool.output[0]
        reader.input[0], pool.output[0] = x, between
        act.input[0], act.output[0] = between, y
        nodes.remove(act)
        nodes.insert(nodes.index(pool) + 1, act)  # topological: only `act` reads `between`
        producer[between], producer[y] = pool, act
        moved.add(between)
    if moved:
        graph.ClearField("node")
        graph.node.extend(nodes)
        kept = [v for v in graph.value_info if v.name not in moved]  # their shapes changed
        graph.ClearField("value_info")
        graph.value_info.extend(kept)
    return model


def rewrite_for_onnxruntime(model_proto):
    """Every exact rewrite this package applies to a converted graph before it is saved:
    :func:`matmuls_as_gemm`, then :func:`pools_before_activations`.  Returns a copy."""
    return pools_before_activations(matmuls_as_gemm(model_proto))


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


@contextlib.contextmanager
def _convolutions_as_graph_ops() -> Iterator[None]:
    """Keras' TensorFlow backend runs a grouped convolution (ConvNeXt's 7x7 depthwise is a
    ``Conv2D(groups=channels)``) inside an XLA-compiled ``tf.function``, because TensorFlow's
    CPU kernel cannot run it; tf2onnx sees that call as an opaque ``StatefulPartitionedCall``
    and cannot convert it.  While the model is traced for ONNX (the trace is converted, never
    run by TensorFlow), convolutions are traced as the plain ``tf.nn.convolution`` op, which
    tf2onnx turns into an ONNX ``Conv`` with its ``group``.  The check against Keras that
    follows runs the model as Keras does."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as backend_nn

    original = backend_nn.conv
    formats = {3: "NWC", 4: "NHWC", 5: "NDHWC"}

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        if (data_format or keras.config.image_data_format()) != "channels_last":
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        return tf.nn.convolution(
            inputs,
            kernel,
            strides,
            padding.upper(),
            data_format=formats[len(inputs.shape)],
            dilations=dilation_rate,
        )

    backend_nn.conv = conv
    try:
        yield
    finally:
        backend_nn.conv = original


def _erfc_as_one_minus_erf(ctx: Any, node: Any, name: str, args: list) -> None:
    """tf2onnx handler for TensorFlow's ``Erfc`` (exact GELU: ``gelu(approximate=False)``,
    ConvNeXt), which ONNX lacks: ``erfc(x) = 1 - erf(x)``."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _run_onnx(path: str, names: list[str], x: Inputs) -> list[np.ndarray]:
    sess = ort_session(path)  # default options (DequantizeLinear files: exact)
    return [np.asarray(y) for y in sess.run(None, as_feed(x, names))]


def to_onnx(
    model: keras.Model,
    path: str | os.PathLike[str],
    opset: int = 17,
    input_name: str = "input",
    check: bool = True,
    int8: bool = False,
    output_name: str = "output",
    rtol: float = 1e-4,
    overwrite: bool = False,
    code_bits: int = 8,
) -> ExportResult:
    """Export ``model`` to an ONNX file, verified against Keras before it is kept.

    The graph is converted with tf2onnx from a ``tf.function`` whose named ``tf.TensorSpec``
    has batch dimension ``None``; ``onnx.checker.check_model`` must pass. With ``check`` the
    file is written to a temporary name in the same directory, run with onnxruntime on random
    inputs (batch 3 and batch 1) around which the model's outputs respond to its inputs, and
    compared with the Keras model; only if the maximum relative error is within the tolerance
    (``rtol`` times the model's sensitivity, :func:`~keras_ssm.export._verify.check_tolerance`)
    is it renamed to ``path``. On any failure nothing is left on disk.

    Args:
        model: a built Keras 3 model (e.g. ``keras_ssm.fold(m)``), with one input or several
            (a keras_hub backbone's token ids, segment ids and padding mask).
        path: destination ``.onnx`` file.
        opset: ONNX opset (13-18 are known to work).
        input_name: name of the graph input of a single-input model (several inputs keep
            their own names: :func:`input_names`).
        check: verify with onnxruntime before keeping the file.
        int8: store ternary kernels as exact int8 codes and one float32 scale per tensor,
            rebuilt in the graph as ``Cast`` + ``Mul`` (see
            :func:`keras_ssm.export.int8.quantize_onnx_ternary`): about 4x smaller, and any
            onnxruntime session, default options included, folds them back into the exact
            float weights (same outputs and speed as the fp32 file).
        code_bits: bits per weight code with ``int8``: 8 (any opset), 4 (int4, opset 21:
            8x smaller than float32 weights) or 2 (int2, opset 25: 16x); 4 and 2 raise the
            file's opset with the ONNX version converter (``details["opset"]`` says which).
        output_name: name of the graph output.
        rtol: tolerance for ``max|onnx - keras| / max|keras|`` on a model whose outputs move
            no more than its inputs; scaled up by the model's sensitivity (float32 rounding
            in a deep network); ``details["check_tolerance"]`` records the one applied.
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
    if int8:  # argument errors before the conversion
        from keras_ssm.export.int8 import check_code_bits

        check_code_bits(code_bits, "code_bits")
    proto, quantized = onnx_bytes(
        model,
        opset=opset,
        input_name=input_name,
        output_name=output_name,
        int8=int8,
        code_bits=code_bits,
    )
    data = proto.SerializeToString()
    names = input_names(model, input_name)
    err = None
    checked: dict[str, float] = {}
    with atomic_path(final, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            err, checked = verify_file(
                model, lambda x: _run_onnx(tmp, names, x), "ONNX export", rtol, final
            )
    from keras_ssm.export.int8 import default_opset

    details = {"quantized": quantized, "opset": default_opset(proto), **checked}
    return ExportResult(final, len(data), err, details)
