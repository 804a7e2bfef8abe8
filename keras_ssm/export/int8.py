"""Exact low-bit weights for ternary (ELUS) kernels.

A folded signed-supermask layer has kernel ``w0 * M`` with ``|w0| = c`` constant per layer
(ELUS init), so every weight is one of ``{-c, 0, +c}``. Stored as integer codes in
``{-1, 0, 1}`` with one float32 scale ``c`` per tensor, the weights are *exact*:
``code * c`` reproduces ``+-c`` and ``0`` bit for bit.  The codes fit in int8 (any ONNX
opset), int4 (opset 21) or int2 (opset 25): 8, 4 or 2 bits per weight instead of 32.

Example:
    >>> import numpy as np
    >>> k = np.float32(0.5) * np.array([[1, 0], [0, -1]], dtype=np.float32)
    >>> is_ternary(k)
    0.5
    >>> is_ternary(np.array([0.5, 0.25], dtype=np.float32)) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "is_ternary",
    "ternary_codes",
    "check_code_bits",
    "default_opset",
    "QuantizedInitializer",
    "quantize_onnx_ternary",
    "onnx_dequantized_weights",
    "tflite_int8_weights",
]

_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}


def is_ternary(kernel: np.ndarray) -> float | None:
    """Return ``c`` if every entry of ``kernel`` is one of ``{-c, 0, +c}``, else ``None``.

    ``c`` is returned as a Python float that converts back to the array's dtype exactly.
    An all-zero array returns ``0.0`` (ternary for any scale); non-float or non-finite
    arrays return ``None``.

    Example:
        >>> import numpy as np
        >>> is_ternary(np.array([0.0, -2.0, 2.0], dtype=np.float32))
        2.0
        >>> is_ternary(np.zeros(3, dtype=np.float32))
        0.0
    """
    a = np.asarray(kernel)
    if a.dtype.kind != "f" or a.size == 0:
        return None
    if not np.all(np.isfinite(a)):
        return None
    nz = np.abs(a[a != 0])
    if nz.size == 0:
        return 0.0
    c = nz[0]
    if not np.all(nz == c):
        return None
    return float(c)


def ternary_codes(kernel: np.ndarray) -> tuple[np.ndarray, float]:
    """Split a ternary array into int8 codes in ``{-1, 0, 1}`` and its scale ``c``.

    Raises:
        ValueError: if ``kernel`` is not ternary.

    Example:
        >>> import numpy as np
        >>> q, c = ternary_codes(np.array([0.0, -3.0, 3.0], dtype=np.float32))
        >>> q.tolist(), c
        ([0, -1, 1], 3.0)
    """
    c = is_ternary(kernel)
    if c is None:
        raise ValueError("array is not ternary ({-c, 0, +c})")
    a = np.asarray(kernel)
    return np.sign(a).astype(np.int8), c


@dataclass(frozen=True)
class QuantizedInitializer:
    """One ONNX weight replaced by integer codes (``bits`` each) and a per-tensor scale."""

    name: str
    shape: tuple[int, ...]
    scale: float
    nonzero: int
    bits: int = 8


FORMS = ("cast", "dequantize")
#: bits per code -> the lowest ONNX opset whose Cast / DequantizeLinear take that integer type
CODE_BITS = {8: 13, 4: 21, 2: 25}


def check_code_bits(bits: object, what: str = "bits") -> None:
    """Raise ``ValueError`` naming ``what`` unless ``bits`` is one of :data:`CODE_BITS`."""
    if bits not in CODE_BITS or isinstance(bits, bool):
        raise ValueError(f"{what} must be one of {', '.join(map(str, CODE_BITS))}; got {bits!r}")


def _code_dtype(bits: int):
    """The numpy dtype of ``bits``-bit signed codes (int4 / int2 from ``ml_dtypes``)."""
    if bits == 8:
        return np.int8
    import ml_dtypes

    return {4: ml_dtypes.int4, 2: ml_dtypes.int2}[bits]


def default_opset(model) -> int:
    """The version of the default ONNX domain a model imports (1 when it names none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def _at_least_opset(model, opset: int):
    """``model`` with its default-domain opset raised to ``opset`` (the ONNX version
    converter) when it is lower; the model itself when it is not."""
    import onnx
    from onnx import version_converter

    current = default_opset(model)
    if current >= opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception as err:  # an operator the converter has no adapter for
        raise ValueError(
            f"cannot raise the ONNX model from opset {current} to {opset} (needed for the "
            f"integer codes): {type(err).__name__}: {err}; use code_bits=8"
        ) from err
    return converted


def quantize_onnx_ternary(model_proto, min_size: int = 16, form: str = "cast", bits: int = 8):
    """Store every ternary MatMul/Gemm/Conv weight of an ONNX model as exact integer codes.

    Each ternary float initializer ``W`` used as the weight input of a MatMul, Gemm,
    Conv or ConvTranspose node becomes an integer initializer ``W_int8`` (values -1/0/1, of
    ``bits`` bits each) and one float32 scale ``c``, rebuilt in the graph as ``W``:

    * ``form="cast"`` (default): ``Mul(Cast(W_int8, to=FLOAT), c) -> W``.  ``c * {-1, 0, 1}``
      is exact in float32, so ``W`` equals the original weights bit for bit, and onnxruntime
      folds the two constant nodes into a float initializer when it loads the model: the same
      graph, outputs and speed as the fp32 file under *default* session options.
    * ``form="dequantize"``: ``DequantizeLinear(W_int8, c, 0) -> W``, the QDQ convention.
      Exact only when onnxruntime is told not to fuse it into quantized kernels
      (``session.disable_quant_qdq=1``; :func:`keras_ssm.export.runtime.ort_session`), which
      would quantize the activations too.

    The graph's arithmetic stays float32.  ``bits=4`` / ``bits=2`` pack two / four codes per
    byte; they need opset 21 / 25 (the model is raised to it with the ONNX version converter,
    which checks the result) and a runtime that implements it (onnxruntime 1.32 folds them at
    load like the int8 codes).

    Args:
        model_proto: an ``onnx.ModelProto`` (modified copy is returned; input untouched).
        min_size: leave smaller initializers (e.g. biases that happen to be ternary) alone.
        form: ``"cast"`` or ``"dequantize"``.
        bits: bits per code: 8 (int8, the default: any opset), 4 (int4) or 2 (int2).

    Returns:
        ``(new_model_proto, [QuantizedInitializer, ...])``.

    Raises:
        ValueError: an unknown ``form`` or ``bits``, or a model the version converter cannot
            raise to the opset that ``bits`` needs.

    Example:
        >>> import numpy as np
        >>> from onnx import TensorProto, helper, numpy_helper
        >>> w = numpy_helper.from_array(np.float32(0.5) * np.eye(4, dtype="float32"), "w")
        >>> graph = helper.make_graph(
        ...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
        >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        >>> coded, done = quantize_onnx_ternary(model, bits=2)
        >>> done[0].bits, done[0].scale, coded.opset_import[0].version
        (2, 0.5, 25)
        >>> onnx_dequantized_weights(coded)["w"].tolist()[0]
        [0.5, 0.0, 0.0, 0.0]
    """
    if form not in FORMS:
        raise ValueError(f"Unknown int8 form {form!r}; allowed: {', '.join(FORMS)}.")
    check_code_bits(bits, "bits (code_bits)")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets: list[str] = []
    for node in graph.node:
        idx = _WEIGHT_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        if name in inits and name not in targets:
            targets.append(name)
    done: list[QuantizedInitializer] = []
    new_nodes = []
    for name in targets:
        tensor = inits[name]
        if tensor.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(tensor)
        if arr.size < min_size:
            continue
        c = is_ternary(arr)
        if not c:  # None (not ternary) or 0.0 (all zero: nothing to gain)
            continue
        codes = np.sign(arr).astype(np.int8)
        q_name, s_name, z_name = name + "_int8", name + "_scale", name + "_zero_point"
        graph.initializer.remove(tensor)
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, q_name),
                numpy_helper.from_array(np.array(c, dtype=np.float32), s_name),
            ]
        )
        if form == "cast":
            codes_f = name + "_codes"
            new_nodes += [
                helper.make_node(
                    "Cast", [q_name], [codes_f], to=TensorProto.FLOAT, name=name + "_cast"
                ),
                helper.make_node("Mul", [codes_f, s_name], [name], name=name + "_scale_mul"),
            ]
        else:
            graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int8), z_name))
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [q_name, s_name, z_name], [name], name=name + "_dequantize"
                )
            )
        nonzero = int(np.count_nonzero(codes))
        done.append(QuantizedInitializer(name, tuple(arr.shape), c, nonzero, bits))
    if new_nodes:
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + old)
    if done and bits < 8:  # raise the (valid) int8 model's opset, then narrow its codes
        model = _at_least_opset(model, CODE_BITS[bits])
        narrow = {q.name + suffix for q in done for suffix in ("_int8", "_zero_point")}
        for t in model.graph.initializer:
            if t.name in narrow:
                codes = numpy_helper.to_array(t).astype(_code_dtype(bits))
                t.CopyFrom(numpy_helper.from_array(codes, t.name))
    return model, done


def onnx_dequantized_weights(model_proto) -> dict[str, np.ndarray]:
    """Evaluate, in numpy (float32), every weight rebuilt from integer codes: both
    ``Mul(Cast(q), scale)`` and ``DequantizeLinear(q, scale, zero_point)``.

    Returns a mapping from the rebuilt tensor's name to its float32 value, computed as the
    ONNX operators define it (``q * scale``; ``(q - zero_point) * scale``).
    """
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    casts: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for node in model_proto.graph.node:
        if node.op_type == "Cast" and node.input[0] in inits:
            if inits[node.input[0]].dtype in tuple(map(np.dtype, map(_code_dtype, CODE_BITS))):
                casts[node.output[0]] = inits[node.input[0]].astype(np.float32)
        elif node.op_type == "Mul" and node.input[0] in casts and node.input[1] in inits:
            out[node.output[0]] = casts[node.input[0]] * np.float32(inits[node.input[1]])
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = inits[node.input[0]].astype(np.int32)
            scale = np.float32(inits[node.input[1]])
            zp = inits[node.input[2]].astype(np.int32) if len(node.input) > 2 else 0
            out[node.output[0]] = (q - zp).astype(np.float32) * scale
    return out


def tflite_int8_weights(model_content: bytes) -> list[dict]:
    """List the int8 constant tensors of a ``.tflite`` flatbuffer with their scales.

    Each entry has ``name``, ``values`` (int8 array), ``scales`` (float32 array) and ``axis``
    (the quantized dimension). Useful to check that a dynamic-range quantized ternary model
    stores ``{-q, 0, +q}`` codes whose ``q * scale`` equals ``c``.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content)
    interp.allocate_tensors()
    out = []
    for d in interp.get_tensor_details():
        if d["dtype"] != np.int8:
            continue
        qp = d["quantization_parameters"]
        if len(qp["scales"]) == 0:
            continue
        try:
            values = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # not a constant tensor
            continue
        out.append(
            {
                "name": d["name"],
                "values": values,
                "scales": np.array(qp["scales"]),
                "axis": int(qp["quantized_dimension"]),
            }
        )
    return out
